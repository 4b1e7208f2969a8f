// Loads the built site in headless Chromium and fails on what a reader would
// hit: a page that does not load (HTTP error or the "Page Not Found" page), an
// error in the browser console or an uncaught exception, a request that fails
// or leaves the machine, a Mermaid diagram that did not render, and an
// internal link on a visited page that leads nowhere (missing page or missing
// anchor). Saves a full-page screenshot of each visited page.
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

// The pages the check visits; `mermaid` marks a page whose diagrams must render.
const PAGES = [
  { name: 'home', path: '/' },
  { name: 'quick-start', path: '/docs/guides/quick-start' },
  { name: 'namespace-spec', path: '/docs/reference/namespace-spec' },
  { name: 'request-path', path: '/docs/concepts/request-path', mermaid: true },
];

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

async function visit(browser, { name, path: pagePath, mermaid }) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const where = pagePath;
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

  await page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });

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
} finally {
  await browser.close();
}

console.log(`screenshots in ${outDir}`);
if (problems.length) {
  for (const p of problems) console.error(`error: ${p}`);
  console.error(`browser-check: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`browser-check: ${PAGES.length} pages OK`);
