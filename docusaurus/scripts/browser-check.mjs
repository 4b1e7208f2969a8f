// Loads the built site in headless Chromium and fails on what a reader would
// hit: a page that does not load (HTTP error or the "Page Not Found" page), an
// error in the browser console or an uncaught exception, a request that fails
// or leaves the machine, a Mermaid diagram that did not render, and an
// internal link on a visited page that leads nowhere (missing page or missing
// anchor), more than one highlighted navbar item (or not the expected one), a
// page that scrolls sideways (a wide table must scroll inside itself), a
// Mermaid diagram shrunk below readable size, a plot with no light background
// in dark mode, and a search box that finds nothing for a word every page
// uses. Saves a full-page screenshot of each visited page (and of the search
// results, search.png).
//
//   node scripts/browser-check.mjs --url http://127.0.0.1:3000 --out ../artifacts/docs
//
// The site must already be served at --url (CI serves docusaurus/build with
// `docusaurus serve`). Chromium is the system one: CHROMIUM_PATH, or
// /usr/bin/chromium.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

// The pages the check visits. `nav` is the navbar item the page must highlight
// (null: none); `mermaid` marks a page whose diagrams must render; `dark`
// visits the page in dark mode too (screenshot NAME-dark.png); `text` is a
// pattern the page's content must match.
const PAGES = [
  { name: 'home', path: '/', nav: null },
  { name: 'quick-start', path: '/docs/guides/quick-start', nav: 'Quick start' },
  { name: 'clients', path: '/docs/guides/clients', nav: 'Docs' },
  { name: 'request-path', path: '/docs/concepts/request-path', nav: 'Docs', mermaid: true },
  { name: 'multi-machine', path: '/docs/operations/multi-machine', nav: 'Docs', mermaid: true },
  { name: 'namespace-spec', path: '/docs/reference/namespace-spec', nav: 'Reference' },
  { name: 'timeseries-api', path: '/docs/reference/timeseries-api', nav: 'Reference', text: /service TimeSeriesService/ },
  { name: 'graph-api', path: '/docs/reference/graph-api', nav: 'Reference', text: /service GraphService/ },
  { name: 'performance', path: '/docs/reference/performance', nav: 'Reference', dark: true },
  { name: 'adrs', path: '/docs/adr', nav: 'ADRs', text: /ADR-001 — .*ADR-014 — /s },
  { name: 'adr-010', path: '/docs/adr/adr-010', nav: 'ADRs' },
  { name: 'changelog', path: '/docs/changelog', nav: 'Changelog' },
];

// A Mermaid diagram drawn smaller than this share of its natural size (a wide
// left-to-right diagram squeezed into the column) has unreadable text.
const MIN_DIAGRAM_SCALE = 0.75;

// The search check: a word nearly every page uses must find pages.
const SEARCH = { from: '/docs/intro', query: 'namespace' };

// The flags CI starts Chromium with (playwright adds --headless itself).
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking'];

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    out: { type: 'string', default: '../artifacts/docs' },
    chromium: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
  },
});
if (!args.url) {
  console.error('usage: node scripts/browser-check.mjs --url http://127.0.0.1:PORT [--out DIR] [--chromium PATH]');
  process.exit(2);
}
const base = new URL(args.url);
const outDir = path.resolve(args.out);

const problems = [];
const problem = (where, what) => problems.push(`${where}: ${what}`);

/** Fetches an internal URL and says what is wrong with it, or null. Cached per page URL. */
const fetched = new Map();
async function checkLink(href) {
  const url = new URL(href);
  const pageUrl = `${url.origin}${url.pathname}`;
  if (!fetched.has(pageUrl)) {
    fetched.set(
      pageUrl,
      fetch(pageUrl, { redirect: 'follow' }).then(
        async (res) => ({ status: res.status, html: res.ok ? await res.text() : '' }),
        (err) => ({ status: 0, html: '', error: String(err) }),
      ),
    );
  }
  const res = await fetched.get(pageUrl);
  if (res.status !== 200) return `HTTP ${res.status || res.error}`;
  if (/<title[^>]*>\s*Page Not Found/i.test(res.html)) return 'the "Page Not Found" page';
  const anchor = decodeURIComponent(url.hash.slice(1));
  if (anchor && !new RegExp(`\\sid="${anchor.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"`).test(res.html)) {
    return `no element with id "${anchor}"`;
  }
  return null;
}

/** Opens a page that reports console errors, failed requests and requests to other hosts. */
async function open(browser, where, colorScheme = 'light') {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, colorScheme });
  page.on('console', (msg) => {
    if (msg.type() === 'error') problem(where, `console error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problem(where, `uncaught exception: ${err.message}`));
  page.on('requestfailed', (req) => {
    if (new URL(req.url()).origin === base.origin) {
      problem(where, `request failed: ${req.url()} (${req.failure()?.errorText})`);
    }
  });
  page.on('response', (res) => {
    if (new URL(res.url()).origin === base.origin && res.status() >= 400) {
      problem(where, `HTTP ${res.status()} for ${res.url()}`);
    }
  });
  // The site must work offline: nothing may be fetched from another host.
  await page.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.origin === base.origin || url.protocol === 'data:' || url.protocol === 'blob:') return route.continue();
    problem(where, `request to another host: ${url.href}`);
    return route.abort();
  });
  return page;
}

async function visit(browser, { name, path: pagePath, nav, mermaid, dark, text }) {
  const where = pagePath;
  const page = await open(browser, where);
  const response = await page.goto(new URL(pagePath, base).href, { waitUntil: 'networkidle' });
  if (!response || response.status() !== 200) {
    problem(where, `page answered HTTP ${response ? response.status() : 'nothing'}`);
  }
  const title = await page.title();
  if (/Page Not Found/i.test(title)) problem(where, 'the "Page Not Found" page');
  if (!(await page.locator('main').count())) problem(where, 'no <main> element: the page did not render');

  if (mermaid) {
    const diagrams = page.locator('.docusaurus-mermaid-container');
    const count = await diagrams.count();
    if (!count) problem(where, 'no Mermaid diagram on a page that has some');
    for (let i = 0; i < count; i++) {
      const svg = diagrams.nth(i).locator('svg');
      try {
        await svg.first().waitFor({ state: 'attached', timeout: 10_000 });
      } catch {
        problem(where, `Mermaid diagram ${i + 1} did not render`);
        continue;
      }
      if (await diagrams.nth(i).getByText(/Syntax error/i).count()) {
        problem(where, `Mermaid diagram ${i + 1} has a syntax error`);
      }
    }
  }

  // One navbar item per page: the docs plugin lights every `type: 'doc'` item
  // of the page's sidebar, so the navbar uses plain links with a regex each.
  const active = await page.locator('.navbar__link--active').allInnerTexts();
  if (active.length > 1) problem(where, `${active.length} navbar items highlighted: ${active.join(', ')}`);
  if (nav !== undefined && (active[0] ?? null) !== nav) {
    problem(where, `navbar highlights ${active[0] ? `"${active[0]}"` : 'nothing'}, expected ${nav ? `"${nav}"` : 'nothing'}`);
  }

  // A wide table or diagram scrolls inside itself; the page never scrolls sideways.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) problem(where, `the page scrolls sideways by ${overflow}px (something is wider than the page)`);

  if (text && !text.test(await page.locator('main').innerText())) {
    problem(where, `the page does not show ${text}`);
  }

  if (mermaid) {
    const scales = await page.$$eval('.docusaurus-mermaid-container svg', (svgs) =>
      svgs.map((svg) => svg.getBoundingClientRect().width / (svg.viewBox.baseVal?.width || svg.getBoundingClientRect().width)),
    );
    scales.forEach((scale, i) => {
      if (scale < MIN_DIAGRAM_SCALE) {
        problem(where, `Mermaid diagram ${i + 1} is drawn at ${Math.round(scale * 100)}% of its size: too wide for the page`);
      }
    });
  }

  await page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });
  if (dark) await visitDark(browser, pagePath, name);

  // Every internal link on the page, including the navbar, sidebar and footer.
  const hrefs = await page.$$eval('a[href]', (as) => as.map((a) => a.href));
  const internal = [...new Set(hrefs.filter((h) => h.startsWith(base.origin)))];
  const results = await Promise.all(internal.map(async (href) => [new URL(href), await checkLink(href)]));
  const reported = new Set();
  for (const [url, why] of results) {
    if (!why) continue;
    // A missing page is reported once, not once per anchor on it.
    const link = why.startsWith('no element') ? `${url.pathname}${url.hash}` : url.pathname;
    if (reported.has(link)) continue;
    reported.add(link);
    problem(where, `broken link ${link}: ${why}`);
  }
  await page.close();
  return internal.length;
}

/** Dark mode: every image in the content sits on a light background. */
async function visitDark(browser, pagePath, name) {
  const where = `${pagePath} (dark)`;
  const page = await open(browser, where, 'dark');
  await page.goto(new URL(pagePath, base).href, { waitUntil: 'networkidle' });
  if ((await page.locator('html').getAttribute('data-theme')) !== 'dark') problem(where, 'the site did not switch to dark mode');
  const images = await page.$$eval('.markdown img', (imgs) =>
    imgs.map((img) => ({ alt: img.getAttribute('alt'), background: getComputedStyle(img).backgroundColor })),
  );
  for (const { alt, background } of images) {
    if (background !== 'rgb(255, 255, 255)') problem(where, `image "${alt}" has no white background in dark mode (${background})`);
  }
  await page.screenshot({ path: path.join(outDir, `${name}-dark.png`), fullPage: true });
  await page.close();
}

/** Types a query into the navbar search box and expects suggestions that lead to a page. */
async function checkSearch(browser) {
  const where = `search "${SEARCH.query}"`;
  const page = await open(browser, where);
  await page.goto(new URL(SEARCH.from, base).href, { waitUntil: 'networkidle' });
  const input = page.locator('input.navbar__search-input');
  if (!(await input.count())) {
    problem(where, 'no search box in the navbar');
    await page.close();
    return 0;
  }
  await input.click();
  await input.pressSequentially(SEARCH.query, { delay: 20 });
  const options = page.locator('[role="listbox"] [role="option"]');
  try {
    await options.first().waitFor({ state: 'visible', timeout: 15_000 });
  } catch {
    problem(where, 'no search results (the local index did not load or found nothing)');
  }
  const hits = await options.allInnerTexts();
  if (hits.length && !hits.some((h) => h.toLowerCase().includes(SEARCH.query))) {
    problem(where, `no result mentions "${SEARCH.query}": ${hits.slice(0, 3).join(' | ')}`);
  }
  await page.screenshot({ path: path.join(outDir, 'search.png') });
  if (hits.length) {
    // Choosing a result opens its page.
    await options.first().click();
    await page.waitForLoadState('networkidle');
    const url = new URL(page.url());
    if (!url.pathname.startsWith('/docs/') || /Page Not Found/i.test(await page.title())) {
      problem(where, `the first result led to ${url.pathname}: not a page of the docs`);
    }
  }
  await page.close();
  return hits.length;
}

await mkdir(outDir, { recursive: true });
const browser = await chromium.launch({ executablePath: args.chromium, headless: true, args: CHROMIUM_ARGS });
try {
  console.log(`browser-check: ${browser.version()} at ${base.href}`);
  for (const p of PAGES) {
    const before = problems.length;
    const links = await visit(browser, p);
    const status = problems.length === before ? 'ok' : 'FAILED';
    console.log(`${status.padEnd(6)} ${p.path} (${links} internal links checked; screenshot ${p.name}.png)`);
  }
  const before = problems.length;
  const hits = await checkSearch(browser);
  const status = problems.length === before ? 'ok' : 'FAILED';
  console.log(`${status.padEnd(6)} search "${SEARCH.query}" from ${SEARCH.from} (${hits} results; screenshot search.png)`);
} finally {
  await browser.close();
}

console.log(`screenshots in ${outDir}`);
if (problems.length) {
  for (const p of problems) console.error(`error: ${p}`);
  console.error(`browser-check: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`browser-check: ${PAGES.length} pages and the search OK`);
