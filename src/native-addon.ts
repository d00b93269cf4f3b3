// Finds the node-gyp addons of native/ (native/build/Release/<name>.node) from
// src/ (ts) or dist/src/ (compiled) alike, for the modules that bind them.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The relative path of addon `name` under the repository root. */
function relativePath(name: string): string {
  return join('native', 'build', 'Release', `${name}.node`);
}

/** Where addon `name` is built, searching up from this module; null when it is not built. */
export function nativeAddonPath(name: string): string | null {
  const relative = relativePath(name);
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let up = 0; up < 6; up++, dir = dirname(dir)) {
    const candidate = join(dir, relative);
    if (existsSync(candidate)) return candidate;
  }
  return null;
}

/**
 * Loads addon `name`, or throws saying how to build it (`needs`: what the
 * build requires beyond Node's headers, e.g. a Debian package).
 */
export function loadNativeAddon<T>(name: string, needs = ''): T {
  const found = nativeAddonPath(name);
  if (found === null) throw new Error(`${relativePath(name)} not built: run npm install (node-gyp builds native/${needs === '' ? '' : `, ${needs}`})`);
  return createRequire(import.meta.url)(found) as T;
}
