// Flags every headless Chromium run of the web/ checks starts with: no sandbox (root on CI),
// and nothing that reaches for the network on its own (this machine has none).
export const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/// Start headless Chromium at `path` with these flags and `extra`; on failure print why as
/// `name: could not start PATH: ...` and exit 2 (the checks' "browser could not start").
export async function launchOrExit(playwright, name, path, extra = []) {
  try {
    return await playwright.chromium.launch({ executablePath: path, headless: true, args: [...CHROMIUM_ARGS, ...extra] });
  } catch (e) {
    process.stderr.write(`${name}: could not start ${path}: ${e.message}\n`);
    process.exit(2);
  }
}
