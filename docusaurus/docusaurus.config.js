// @ts-check
// The Prism documentation site. Content lives in ../docs-cms (validated by
// tooling/validate_docs.py); this directory only holds the site around it.
// Nothing here reaches the network at build time: no search service, no
// analytics, no remote fonts or images. Search is a local index built with the
// site (@easyops-cn/docusaurus-search-local) and searched in the browser.

import { themes as prismThemes } from 'prism-react-renderer';

/** @type {import('@docusaurus/types').Config} */
const config = {
  title: 'Prism',
  tagline: 'A data access gateway: stable data patterns in front of many backends',
  url: 'http://localhost',
  baseUrl: '/',
  trailingSlash: false,
  favicon: 'img/favicon.svg',

  onBrokenLinks: 'throw',
  onBrokenAnchors: 'throw',
  onDuplicateRoutes: 'throw',

  i18n: { defaultLocale: 'en', locales: ['en'] },

  markdown: {
    mermaid: true,
    hooks: { onBrokenMarkdownLinks: 'throw', onBrokenMarkdownImages: 'throw' },
  },
  themes: [
    '@docusaurus/theme-mermaid',
    [
      '@easyops-cn/docusaurus-search-local',
      {
        // Must match the docs plugin below (path and routeBasePath).
        docsDir: '../docs-cms',
        docsRouteBasePath: 'docs',
        indexDocs: true,
        indexBlog: false,
        indexPages: false,
        hashed: true,
        language: ['en'],
        highlightSearchTermsOnTargetPage: true,
        explicitSearchResultPath: true,
        searchResultLimits: 10,
      },
    ],
  ],

  presets: [
    [
      'classic',
      /** @type {import('@docusaurus/preset-classic').Options} */
      ({
        docs: {
          path: '../docs-cms',
          routeBasePath: 'docs',
          sidebarPath: './sidebars.js',
          // Tags are free-form in docs-cms; no tags.yml to keep in sync.
          onInlineTags: 'ignore',
        },
        blog: false,
        theme: { customCss: './src/css/custom.css' },
        sitemap: false,
      }),
    ],
  ],

  themeConfig:
    /** @type {import('@docusaurus/preset-classic').ThemeConfig} */
    ({
      colorMode: { respectPrefersColorScheme: true },
      navbar: {
        title: 'Prism',
        // Plain links with an activeBaseRegex, not `type: 'doc'` items: a doc
        // item is active on every page of its sidebar, and every page is in
        // the one sidebar, so all of them lit up at once. Each regex owns a
        // disjoint set of routes, so a page highlights at most one item.
        items: [
          {
            to: '/docs/intro',
            label: 'Docs',
            position: 'left',
            activeBaseRegex: '^/docs/(intro|concepts/.*|operations/.*|guides/(?!quick-start$).*)$',
          },
          { to: '/docs/guides/quick-start', label: 'Quick start', position: 'left', activeBaseRegex: '^/docs/guides/quick-start$' },
          { to: '/docs/reference/proxy-config', label: 'Reference', position: 'left', activeBaseRegex: '^/docs/reference/' },
          { to: '/docs/adr', label: 'ADRs', position: 'left', activeBaseRegex: '^/docs/adr(/|$)' },
          { to: '/docs/changelog', label: 'Changelog', position: 'right', activeBaseRegex: '^/docs/changelog$' },
        ],
      },
      footer: {
        style: 'dark',
        links: [
          {
            title: 'Docs',
            items: [
              { label: 'Introduction', to: '/docs/intro' },
              { label: 'Quick start', to: '/docs/guides/quick-start' },
              { label: 'Concepts', to: '/docs/concepts/overview' },
            ],
          },
          {
            title: 'Reference',
            items: [
              { label: 'Proxy config', to: '/docs/reference/proxy-config' },
              { label: 'Namespace spec', to: '/docs/reference/namespace-spec' },
              { label: 'KeyValue API', to: '/docs/reference/keyvalue-api' },
              { label: 'Admin API', to: '/docs/reference/admin-api' },
              { label: 'prismctl', to: '/docs/reference/prismctl' },
            ],
          },
          {
            title: 'Operations',
            items: [
              { label: 'Running the proxy', to: '/docs/operations/running' },
              { label: 'Changelog', to: '/docs/changelog' },
            ],
          },
        ],
        copyright: 'Prism. Built from docs-cms/ with Docusaurus.',
      },
      prism: {
        theme: prismThemes.github,
        darkTheme: prismThemes.dracula,
        additionalLanguages: ['bash', 'protobuf', 'toml', 'json'],
      },
      mermaid: { theme: { light: 'neutral', dark: 'dark' } },
      tableOfContents: { minHeadingLevel: 2, maxHeadingLevel: 3 },
    }),
};

export default config;
