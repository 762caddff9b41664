// Probes for the browser tests (`tests/browser_tabs.rs`, `tests/browser_react.rs`), harmless in
// the demo: the `EventSource`s this page created (the tab holding the shared stream has one
// open, the others none), the comment events option B received, and `connect` itself, to
// subscribe to more channels from a test.
import { connect } from '@ssehub/client';

declare global {
  interface Window {
    __ssehubSources?: EventSource[];
    __ssehubEvents?: { id: string; n: number }[];
    __ssehubConnect?: typeof connect;
  }
}

/** Install the probes (called by main.tsx: the package is `sideEffects: false`). */
export function installProbes(): void {
  const sources: EventSource[] = [];
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(url: string | URL, init?: EventSourceInit) {
      super(url, init);
      sources.push(this);
    }
  };
  window.__ssehubSources = sources;
  window.__ssehubEvents = [];
  window.__ssehubConnect = connect;
}
