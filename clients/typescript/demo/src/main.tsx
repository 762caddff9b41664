import { QueryClient, QueryClientProvider } from '@tanstack/react-query';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';

import { App } from './App';
import { installProbes } from './probes';

installProbes();
const queryClient = new QueryClient();
const id = new URLSearchParams(location.search).get('discussion') || '123';

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <QueryClientProvider client={queryClient}>
      <App discussionId={id} />
    </QueryClientProvider>
  </StrictMode>,
);
