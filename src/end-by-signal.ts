// A second SIGTERM/SIGINT means "now" (the daemon's stop, an offline
// `couchestor volumes migrate`): the process ends by that signal, as if it
// had no handler for it. Not process.exit(128 + n): Node's exit joins the
// libuv thread pool, and LMDB's write thread (lmdb-js) waits there, inside a
// write transaction, for the JavaScript thread to run the transaction's
// callback. A second signal that landed while one was queued (an S3 PUT's
// index flip, a destage's, the heat samples' at a stop: any commit) never
// returned from process.exit: the process hung for good, ignored every later
// signal and kept the data directory's lock, until a SIGKILL. The kernel
// ends a process by a signal at once, whatever its threads wait for; a
// shell, Docker and Kubernetes report it as 128 + the signal's number (143
// for SIGTERM, 130 for SIGINT). stderr is written synchronously on Linux
// (file, pipe or terminal), so every line logged before is out.
import os from 'node:os';

/**
 * Ends this process by `sig` now. The listeners of SIGTERM and SIGINT are
 * removed first, which gives both back their default action (end the
 * process); then the process signals itself. A SIGKILL follows only if,
 * 5 s later, it is somehow still running.
 */
export function endBySignal(sig: NodeJS.Signals): never {
  // PID 1 of a pid namespace (a container running `node` itself, as deploy/daemonset.yaml does):
  // the kernel drops the signals it sends itself without a handler, SIGKILL included. There the exit
  // is process.exit's, as before, which a queued LMDB commit can still hold (until the runtime's
  // SIGKILL, from outside the namespace: what a kubelet or `docker stop` sends after its grace).
  if (process.pid === 1) process.exit(128 + (os.constants.signals[sig] ?? 15));
  process.removeAllListeners('SIGTERM');
  process.removeAllListeners('SIGINT');
  process.kill(process.pid, sig);
  // Delivered to another thread, the signal may end the process a moment after kill() returns: block this one meanwhile.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5_000);
  process.kill(process.pid, 'SIGKILL');
  throw new Error(`still running after ${sig} and SIGKILL`);
}
