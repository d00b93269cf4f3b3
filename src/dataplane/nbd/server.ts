// NBD listener on TCP and a Unix socket; one export per volume.
import fs from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { NotFound } from '../errors.js';
import type { VolumeManager } from '../volumes/manager.js';
import type { Volume } from '../volumes/volume.js';
import { NbdConnection, type ExportResolver } from './connection.js';
import { log } from '../../log.js';

export const DEFAULT_NBD_PORT = 10809;
/** Bound on concurrent client connections; further ones are refused. */
export const MAX_CONNECTIONS = 1024;

export interface NbdServerOptions {
  manager: VolumeManager;
  /** Volume served for the empty export name (nbd://host with no path). */
  defaultExport?: string;
}

export class NbdServer implements ExportResolver {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly opts: NbdServerOptions) {}

  resolve(name: string): Volume {
    const target = name === '' ? this.opts.defaultExport : name;
    if (!target) throw new NotFound('no default export configured');
    return this.opts.manager.openVolume(target);
  }

  list(): { name: string; description: string }[] {
    return this.opts.manager.listVolumes().map((v) => ({ name: v.name, description: this.description(v.name) }));
  }

  description(name: string): string {
    const v = this.opts.manager.getVolumeRecord(name);
    return v ? `CoucheStor volume ${v.name} (${v.tier}, pool ${v.poolName})` : '';
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  private accept(socket: net.Socket): void {
    if (this.sockets.size >= MAX_CONNECTIONS) {
      log.warn('nbd: connection limit reached, refusing client', { limit: MAX_CONNECTIONS });
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    new NbdConnection(socket, this, () => this.sockets.delete(socket));
  }

  async listenTcp(port = DEFAULT_NBD_PORT, host = '127.0.0.1'): Promise<AddressInfo> {
    const srv = net.createServer({ noDelay: true }, (s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => resolve());
    });
    this.servers.push(srv);
    return srv.address() as AddressInfo;
  }

  async listenUnix(socketPath: string): Promise<void> {
    // A socket file left by a killed daemon would make listen fail with EADDRINUSE.
    fs.rmSync(socketPath, { force: true });
    const srv = net.createServer((s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(socketPath, () => resolve());
    });
    this.servers.push(srv);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}
