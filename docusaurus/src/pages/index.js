import React from 'react';
import Link from '@docusaurus/Link';
import Layout from '@theme/Layout';
import styles from './index.module.css';

const sections = [
  {
    title: 'Quick start',
    to: '/docs/guides/quick-start',
    text: 'Build Prism, start the proxy on the embedded default, and read and write keys with prismctl.',
  },
  {
    title: 'Concepts',
    to: '/docs/concepts/overview',
    text: 'Namespaces, data patterns, backend plugins, and the path a request takes through the proxy.',
  },
  {
    title: 'Reference',
    to: '/docs/reference/proxy-config',
    text: 'The proxy config, the namespace spec, the KeyValue and Admin APIs, the plugin protocol and the CLI.',
  },
  {
    title: 'Operations',
    to: '/docs/operations/running',
    text: 'Running the proxy, logs, limits, plugin supervision and shutdown.',
  },
];

export default function Home() {
  return (
    <Layout title="Prism" description="Prism, a data access gateway">
      <header className={styles.hero}>
        <div className="container">
          <h1 className={styles.title}>Prism</h1>
          <p className={styles.tagline}>
            One gRPC endpoint, stable data patterns, many backends. Teams declare namespaces in YAML; Prism routes
            each one to a supervised backend plugin.
          </p>
          <Link className="button button--primary button--lg" to="/docs/guides/quick-start">
            Get started
          </Link>
        </div>
      </header>
      <main className="container margin-vert--lg">
        <div className="row">
          {sections.map((s) => (
            <div key={s.title} className="col col--3 margin-bottom--lg">
              <Link to={s.to} className={styles.card}>
                <h2>{s.title}</h2>
                <p>{s.text}</p>
              </Link>
            </div>
          ))}
        </div>
      </main>
    </Layout>
  );
}
