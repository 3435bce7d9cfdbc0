// Flags every headless Chromium run of the web/ checks starts with: no sandbox (root on CI),
// and nothing that reaches for the network on its own (this machine has none).
export const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
