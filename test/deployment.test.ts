// Deployment: gpunixd as a systemd service. The daemon's readiness notification (Type=notify) is
// checked against a real Unix datagram socket that stands in for systemd's ($NOTIFY_SOCKET, with a
// python3 receiver: Node cannot bind one), with the daemon run as its own process as systemd runs
// it; the unit, sysusers and tmpfiles files are checked with systemd's own tools (the unit's
// exposure score, and the user, groups and directories created in a scratch root).

import assert from 'node:assert/strict';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Session } from '../src/client/session.js';
import { loadConfigFile } from '../src/daemon/config.js';
import { eventually } from './helpers.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const contrib = join(root, 'contrib');

/** Why `command` cannot be used here, or null when it runs. */
function missing(command: string, args = ['--version']): string | null {
  const result = spawnSync(command, args, { stdio: 'ignore' });
  return result.error ? `${command} is not installed (${(result.error as NodeJS.ErrnoException).code})` : null;
}

// Binds a Unix datagram socket at argv[1] and prints each datagram as a JSON string on a line;
// closes file descriptors passed with a message (systemd-notify's barrier waits for that).
const RECEIVER = `
import array, json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps("listening"), flush=True)
while True:
    data, ancillary, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                os.close(fd)
    print(json.dumps(data.decode()), flush=True)
`;

/** A notification's VARIABLE=VALUE lines as an object. */
function fields(message: string): Record<string, string> {
  return Object.fromEntries(message.split('\n').filter(Boolean).map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
}

interface RunningChild {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** `gpunix daemon` (a personal daemon on `socket`) as its own process, with `env`. */
function startDaemonProcess(socket: string, env: NodeJS.ProcessEnv): RunningChild {
  const child = spawn(process.execPath, [join(root, 'bin/gpunix.js'), 'daemon', '--socket', socket], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stderr: () => stderr, exited };
}

/** Asserts the daemon on `socket` serves an operator's request. */
async function assertServes(socket: string): Promise<void> {
  const control = await Session.open({ socket }, { role: 'control' });
  try {
    const listed = (await control.call('ListProcesses', {})) as { processes: unknown[] };
    assert.ok(Array.isArray(listed.processes));
  } finally {
    control.close();
  }
}

describe('readiness: gpunixd under systemd Type=notify', () => {
  const skip = missing('python3') ?? missing('systemd-notify');
  let dir: string;
  let receiver: ChildProcess | null = null;
  const started: ChildProcess[] = [];
  const messages: string[] = [];
  /** For each message: whether the socket being watched existed when it arrived. */
  const socketThen: boolean[] = [];
  let watched = '';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'gpunix-deploy-'));
    if (skip) return;
    receiver = spawn('python3', ['-c', RECEIVER, join(dir, 'notify.sock')], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buffered = '';
    receiver.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const line of lines) {
        messages.push(JSON.parse(line) as string);
        socketThen.push(watched !== '' && existsSync(watched));
      }
    });
    await eventually('the notification socket is bound', () => messages.includes('listening') || receiver!.exitCode !== null);
    assert.equal(receiver.exitCode, null, 'the python3 receiver failed to start');
  });

  after(() => {
    for (const child of [...started, receiver]) if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('says READY=1 once its socket serves, and STOPPING=1 with room for the drain on SIGTERM', { skip: skip ?? false }, async () => {
    const socket = join(dir, 'gpunixd.sock');
    watched = socket;
    const daemon = startDaemonProcess(socket, { ...process.env, NOTIFY_SOCKET: join(dir, 'notify.sock') });
    started.push(daemon.child);
    const { child } = daemon;
    const ready = () => messages.find((m) => fields(m).READY === '1');
    await eventually('the daemon says READY=1', () => ready() !== undefined || child.exitCode !== null, 60_000);
    assert.equal(child.exitCode, null, `the daemon exited: ${daemon.stderr()}`);
    assert.ok(socketThen[messages.indexOf(ready()!)], 'the socket existed when READY=1 arrived');
    const readiness = fields(ready()!);
    assert.equal(readiness.MAINPID, String(child.pid), 'MAINPID names the daemon, not the systemd-notify child that sent it');
    assert.equal(readiness.STATUS, `listening on ${socket}`);
    await assertServes(socket);

    child.kill('SIGTERM');
    const stopping = () => messages.find((m) => fields(m).STOPPING === '1');
    await eventually('the daemon says STOPPING=1', () => stopping() !== undefined || child.exitCode !== null, 30_000);
    const stop = fields(stopping()!);
    assert.match(stop.STATUS, /^draining/);
    // The drain's timeout (drainTimeoutMs, 30 s by default) plus the margin, in microseconds: systemd
    // extends its stop timeout to this rather than SIGKILL a drain longer than TimeoutStopSec=.
    assert.ok(Number(stop.EXTEND_TIMEOUT_USEC) >= 30_000_000, `EXTEND_TIMEOUT_USEC=${stop.EXTEND_TIMEOUT_USEC}`);
    assert.equal(await daemon.exited, 0, daemon.stderr());
    assert.ok(!daemon.stderr().includes('systemd-notify'), `no notification failed: ${daemon.stderr()}`);
  });

  it('without systemd-notify it still serves, and logs why systemd will not see it ready', { skip: missing('mkfifo', ['--help']) ?? false }, async () => {
    // A PATH with mkfifo (the stderr relay uses it) and no systemd-notify.
    const bin = join(dir, 'bin');
    mkdirSync(bin, { recursive: true });
    const mkfifo = spawnSync('sh', ['-c', 'command -v mkfifo'], { encoding: 'utf8' }).stdout.trim();
    symlinkSync(mkfifo, join(bin, 'mkfifo'));
    const socket = join(dir, 'alone.sock');
    const daemon = startDaemonProcess(socket, { ...process.env, PATH: bin, NOTIFY_SOCKET: join(dir, 'nobody-listens.sock') });
    started.push(daemon.child);
    const { child } = daemon;
    const warned = () => daemon.stderr().includes('systemd-notify did not run');
    await eventually('the daemon warns that it cannot notify', () => warned() || child.exitCode !== null, 60_000);
    assert.equal(child.exitCode, null, `the daemon exited: ${daemon.stderr()}`);
    const line = daemon.stderr().split('\n').find((l) => l.includes('systemd-notify did not run'))!;
    const entry = JSON.parse(line) as { level: number; notification: string };
    assert.equal(entry.level, 40, 'a warning');
    assert.match(entry.notification, /--ready/);
    await assertServes(socket);
    child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0, daemon.stderr());
  });
});

// The unit's file-system sandbox and identity, without systemd (no PID 1 systemd here or in CI): a
// private mount namespace with everything read-only but the runtime, state and cache directories
// (ProtectSystem=strict with RuntimeDirectory=, StateDirectory=, CacheDirectory=), /proc/sys and
// /sys read-only (ProtectKernelTunables=), an empty /tmp (PrivateTmp=), /root and /home hidden
// (ProtectHome=) — each but where this checkout is; an unprivileged user with no capabilities and
// no_new_privs, umask 0077. argv: runtime, state, cache directories, the directories to hide and
// to replace with an empty /tmp (space-separated lists), then the daemon's command line.
const SANDBOX = `
set -e
run=$1 state=$2 cache=$3 hide=$4 empty=$5; shift 5
for d in "$run" "$state" "$cache"; do mount --bind "$d" "$d"; done
mount -o remount,bind,ro /
mount -o remount,bind,ro /sys
mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
for d in $empty; do mount -t tmpfs -o mode=1777 tmpfs "$d"; done
for d in $hide; do mount -t tmpfs -o ro,mode=755 tmpfs "$d"; done
umask 0077
exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all \\
  env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$state" XDG_CACHE_HOME="$cache" "$@"
`;

/** Whether user nobody (65534) can read `path` (the daemon runs as it in the sandbox). */
function readableByNobody(path: string): boolean {
  const probe = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', `require('fs').accessSync(${JSON.stringify(path)}, 4)`]);
  return probe.status === 0;
}

describe('gpunixd in the unit\'s sandbox (emulated: an unprivileged user in a read-only file system)', () => {
  const skip =
    process.getuid?.() !== 0
      ? 'needs root (to make the mount namespace and drop to an unprivileged user)'
      : (missing('unshare', ['--version']) ??
        missing('setpriv', ['--version']) ??
        (spawnSync('unshare', ['-m', 'true']).status === 0 ? null : 'unshare -m is not permitted here') ??
        (readableByNobody(join(root, 'dist/src/cli/main.js')) ? null : 'this checkout is not readable by an unprivileged user'));
  let dir: string;
  let daemon: RunningChild | null = null;

  after(() => {
    if (daemon && daemon.child.exitCode === null && daemon.child.signalCode === null) daemon.child.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('serves a program and drains with the file system read-only but its own directories', { skip: skip ?? false }, async () => {
    // Not under /tmp: the sandbox mounts an empty /tmp over it.
    dir = mkdtempSync('/var/tmp/gpunix-sandbox-');
    chmodSync(dir, 0o755);
    const [run, state, cache] = ['run', 'state', 'cache'].map((name) => join(dir, name));
    for (const d of [run, state, cache]) {
      mkdirSync(d, { mode: 0o750 });
      chownSync(d, 65534, 65534);
    }
    const socket = join(run, 'gpunixd.sock');
    const config = join(dir, 'gpunixd.json');
    writeFileSync(config, JSON.stringify({ socket, socketMode: '0660', anonymousTenant: 'default', stateFile: join(state, 'state.json'), imageDir: join(state, 'images') }), { mode: 0o644 });
    const command = [process.execPath, join(root, 'bin/gpunix.js'), 'daemon', '--config', config];
    // What the daemon runs from (this checkout, Node) stays visible.
    const away = (dirs: string[]) => dirs.filter((d) => existsSync(d) && ![root, process.execPath].some((p) => p.startsWith(`${d}/`))).join(' ');
    const args = ['-m', '--propagation', 'private', 'sh', '-c', SANDBOX, 'sandbox', run, state, cache, away(['/root', '/home']), away(['/tmp']), ...command];
    const child = spawn('unshare', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    daemon = { child, stderr: () => stderr, exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))) };
    await eventually('the sandboxed daemon listens', () => existsSync(socket) || child.exitCode !== null, 60_000);
    assert.equal(child.exitCode, null, `the daemon exited: ${stderr}`);
    const owner = statSync(socket);
    assert.deepEqual([owner.uid, owner.mode & 0o777], [65534, 0o660], 'the socket is the unprivileged user\'s, mode socketMode');

    const program = spawnSync(process.execPath, [join(root, 'bin/gpunix.js'), 'run', '--connect', '--socket', socket, join(root, 'examples/saxpy.mjs')], { encoding: 'utf8' });
    assert.equal(program.status, 0, program.stderr);
    assert.match(program.stdout, /verified/);

    child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0, stderr);
    const errors = stderr.split('\n').filter((line) => line.startsWith('{') && (JSON.parse(line) as { level: number }).level >= 50);
    assert.deepEqual(errors, [], 'no error was logged');
  });
});

describe('the systemd unit, sysusers and tmpfiles files', () => {
  const unit = join(contrib, 'gpunixd.service');

  it('systemd-analyze rates the unit OK (exposure at most 2.0; 8.5 before hardening)', { skip: missing('systemd-analyze') ?? false }, () => {
    const result = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', unit], { encoding: 'utf8' });
    const overall = /Overall exposure level for gpunixd\.service: (\d+\.\d+)/.exec(result.stdout);
    assert.ok(overall, `no score (systemd older than 250 has no --offline): ${result.stderr}`);
    assert.ok(Number(overall[1]) <= 2.0, `exposure ${overall[1]}:\n${result.stdout}`);
    const verify = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
    assert.equal(verify.status, 0, verify.stderr);
    assert.equal(verify.stderr.trim(), '', 'systemd-analyze verify finds nothing to say');
  });

  it('sysusers and tmpfiles create the daemon user, its groups and directories (in a scratch root)', { skip: missing('systemd-sysusers') ?? missing('systemd-tmpfiles') ?? false }, () => {
    const scratch = mkdtempSync(join(tmpdir(), 'gpunix-root-'));
    try {
      // Installed where a package puts them, then each tool run against the scratch root.
      for (const [source, target] of [
        ['gpunix.sysusers.conf', 'usr/lib/sysusers.d/gpunix.conf'],
        ['gpunix.tmpfiles.conf', 'usr/lib/tmpfiles.d/gpunix.conf'],
      ]) {
        mkdirSync(join(scratch, dirname(target)), { recursive: true });
        spawnSync('cp', [join(contrib, source), join(scratch, target)]);
      }
      mkdirSync(join(scratch, 'etc'));
      for (const tool of ['systemd-sysusers', 'systemd-tmpfiles']) {
        const args = tool === 'systemd-tmpfiles' ? [`--root=${scratch}`, '--create'] : [`--root=${scratch}`];
        const result = spawnSync(tool, args, { encoding: 'utf8' });
        assert.equal(result.status, 0, `${tool}: ${result.stderr}`);
      }
      const passwd = readFileSync(join(scratch, 'etc/passwd'), 'utf8').split('\n').map((l) => l.split(':'));
      const user = passwd.find((f) => f[0] === 'gpunix');
      assert.ok(user, 'the gpunix user exists');
      const [, , uid, gid, , home, shell] = user;
      assert.ok(Number(uid) > 0 && Number(uid) < 1000, `a system user (uid ${uid})`);
      assert.equal(home, '/var/lib/gpunix');
      assert.equal(shell, '/usr/sbin/nologin');
      const groups = readFileSync(join(scratch, 'etc/group'), 'utf8').split('\n').map((l) => l.split(':'));
      assert.equal(groups.find((g) => g[0] === 'gpunix')?.[2], gid, 'its own group');
      for (const device of ['render', 'video']) assert.ok(groups.find((g) => g[0] === device)?.[3].split(',').includes('gpunix'), `a member of ${device}`);

      const config = statSync(join(scratch, 'etc/gpunix'));
      assert.deepEqual([config.mode & 0o777, config.uid, config.gid], [0o750, 0, Number(gid)], '/etc/gpunix: root:gpunix 0750');
      const images = statSync(join(scratch, 'var/lib/gpunix/images'));
      assert.deepEqual([images.mode & 0o777, images.uid, images.gid], [0o750, Number(uid), Number(gid)], 'the image directory is the daemon user\'s');

      // The unit runs as the user these files make.
      const text = readFileSync(unit, 'utf8');
      assert.match(text, /^User=gpunix$/m);
      assert.match(text, /^Group=gpunix$/m);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  it('the container image names no registry or mirror host, and its default configuration loads', () => {
    const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8');
    assert.ok(existsSync(join(root, '.dockerignore')));
    // Packages come from the base image's own apt sources (the backports mirror is derived from them).
    const instructions = dockerfile.split('\n').filter((line) => !line.trimStart().startsWith('#'));
    assert.deepEqual(instructions.filter((line) => /[a-z0-9-]+\.(org|com|net|io|dev)\b|:\/\//i.test(line)), []);
    // The configuration the image starts with: the socket in the /run/gpunix volume, group-connectable.
    assert.match(dockerfile, /^COPY contrib\/gpunixd\.container\.json \/etc\/gpunix\/gpunixd\.json$/m);
    const config = loadConfigFile(join(contrib, 'gpunixd.container.json'), {});
    assert.equal(config.socket, '/run/gpunix/gpunixd.sock');
    assert.equal(config.socketMode, 0o660);
    assert.match(dockerfile, /^VOLUME \["\/run\/gpunix", "\/var\/lib\/gpunix"\]$/m);
  });
});
