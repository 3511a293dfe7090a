// Command line: the Rust virtiofsd's long options, plus the C virtiofsd's `-o key[=value],...`
// form, as Kata Containers, libvirt and operators pass them. Parsing only; no I/O.

import yargs from 'yargs';
import type { CacheMode, FsOptions } from './passthrough/passthrough-fs';
import { DEFAULT_GUEST_LIMITS } from './passthrough/budget';
import { IdMapError, idMapFromArgs } from './passthrough/id-map';
import { XattrMapError, parseXattrMap } from './passthrough/xattr-map';

/** The file system's options as the command line gives them, plus the daemon's own. */
export interface Config extends Omit<FsOptions, 'syncIo' | 'memfdState'> {
  socketPath?: string;
  /** Group (name or number) that may connect to the socket: mode 0770 instead of 0700. */
  socketGroup?: string;
  fd?: number;
  threadPoolSize: number;
  logLevel: string;
  printCapabilities: boolean;
  /** How the worker is isolated (the Rust virtiofsd's --sandbox; see src/keeper/sandbox.ts). */
  sandbox: SandboxMode;
  /** What a syscall outside the worker's allowlist gets (the Rust virtiofsd's --seccomp). */
  seccomp: SeccompMode;
  rlimitNofile?: number;
  numRequestQueues: number;
  /**
   * The capabilities the worker keeps (names without CAP_, lower case): DEFAULT_WORKER_CAPS
   * changed by --modcaps / -o modcaps.
   */
  workerCaps: string[];
  /** Serve from a worker process supervised by this one (the default). */
  keeper: boolean;
  /** Keep a loaded spare worker for the next crash (keeper mode). */
  spareWorker: boolean;
  /** How long a worker may take to load, recover or retire, or stay silent, before it is replaced (s). */
  workerTimeoutS: number;
  /** Internal: a memfd with the state an earlier image of this keeper handed over. */
  restoreFd?: number;
}

export class ConfigError extends Error {}

export const SANDBOX_MODES = ['namespace', 'chroot', 'none'] as const;
export type SandboxMode = typeof SANDBOX_MODES[number];
export const SECCOMP_MODES = ['kill', 'log', 'trap', 'none'] as const;
export type SeccompMode = typeof SECCOMP_MODES[number];

function oneOf<T extends string>(flag: string, modes: readonly T[], v: string): T {
  const m = modes.find((x) => x === v);
  if (!m) throw new ConfigError(`invalid ${flag} '${v}' (want ${modes.join(', ')})`);
  return m;
}

const CACHE: Record<string, CacheMode> = { never: 'never', none: 'never', metadata: 'metadata', auto: 'auto', always: 'always' };
const HANDLE_MODES = ['never', 'prefer', 'mandatory'] as const;
const LOG_LEVELS = ['error', 'warn', 'info', 'debug', 'trace', 'off'];

/** What -o set that has no fixed default: the sandbox, and READDIRPLUS (undefined: not given). */
interface DashOGiven { sandbox: boolean; readdirplus?: boolean }

/** Apply the C virtiofsd's -o options on top of the long ones. */
function applyDashO(cfg: Config, opts: string[]): DashOGiven {
  const given: DashOGiven = { sandbox: false };
  for (const group of opts) {
    for (const item of group.split(',')) {
      if (!item) continue;
      const eq = item.indexOf('=');
      const k = eq < 0 ? item : item.slice(0, eq);
      const v = eq < 0 ? '' : item.slice(eq + 1);
      switch (k) {
        case 'source': cfg.sharedDir = v; break;
        case 'cache': {
          const c = CACHE[v];
          if (!c) throw new ConfigError(`invalid -o cache=${v}`);
          cfg.cache = c;
          break;
        }
        case 'xattr': cfg.xattr = true; break;
        case 'no_xattr': cfg.xattr = false; break;
        case 'posix_acl': cfg.posixAcl = true; cfg.xattr = true; break;
        case 'no_posix_acl': cfg.posixAcl = false; break;
        case 'writeback': cfg.writeback = true; break;
        case 'no_writeback': cfg.writeback = false; break;
        case 'readdirplus': given.readdirplus = true; break;
        case 'no_readdirplus': given.readdirplus = false; break;
        case 'announce_submounts': cfg.announceSubmounts = true; break;
        case 'allow_direct_io': cfg.allowDirectIo = true; break;
        case 'no_allow_direct_io': cfg.allowDirectIo = false; break;
        case 'killpriv_v2': cfg.killprivV2 = true; break;
        case 'no_killpriv_v2': cfg.killprivV2 = false; break;
        case 'log_level': cfg.logLevel = v === 'err' ? 'error' : v; break;
        case 'sandbox': cfg.sandbox = oneOf('-o sandbox', SANDBOX_MODES, v); given.sandbox = true; break;
        case 'modcaps': cfg.workerCaps = modcaps(cfg.workerCaps, v); break;
        // Locks are always served (OFD locks); accepted for compatibility.
        case 'flock': case 'no_flock': case 'posix_lock': case 'no_posix_lock':
        case 'timeout': case 'no_security_label':
        case 'allow_root': case 'default_permissions': break;
        case 'xattrmap': cfg.xattrMap = v; cfg.xattr = true; break;
        case 'security_label': throw new ConfigError(SECURITY_LABEL);
        default: throw new ConfigError(`unknown option -o ${k}`);
      }
    }
  }
  return given;
}

/**
 * What the worker keeps of root's capabilities: the C and Rust virtiofsd's default set, plus
 * DAC_READ_SEARCH (open_by_handle_at, linkat of an fd). Everything else (SYS_ADMIN, NET_*,
 * SYS_PTRACE, ...) goes: the worker is the process that parses guest input.
 */
export const DEFAULT_WORKER_CAPS = ['chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'setgid', 'setuid', 'mknod', 'setfcap'];
/** Capability names in the kernel's numbering (linux/capability.h): CAP_BY_NUMBER[n] is cap n. */
export const CAP_BY_NUMBER: readonly string[] = [
  'chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'kill', 'setgid', 'setuid', 'setpcap',
  'linux_immutable', 'net_bind_service', 'net_broadcast', 'net_admin', 'net_raw', 'ipc_lock', 'ipc_owner',
  'sys_module', 'sys_rawio', 'sys_chroot', 'sys_ptrace', 'sys_pacct', 'sys_admin', 'sys_boot', 'sys_nice',
  'sys_resource', 'sys_time', 'sys_tty_config', 'mknod', 'lease', 'audit_write', 'audit_control', 'setfcap',
  'mac_override', 'mac_admin', 'syslog', 'wake_alarm', 'block_suspend', 'audit_read', 'perfmon', 'bpf',
  'checkpoint_restore',
];
const CAP_NAMES = new Set(CAP_BY_NUMBER);

/** Apply a --modcaps list ("+sys_admin:-mknod", as the Rust virtiofsd takes it) to caps. */
function modcaps(caps: string[], spec: string): string[] {
  const out = new Set(caps);
  for (const item of spec.split(':')) {
    const m = /^([+-])(?:cap_)?([a-z_]+)$/i.exec(item.trim());
    const name = m?.[2]!.toLowerCase();
    if (!m || !name || !CAP_NAMES.has(name)) throw new ConfigError(`invalid --modcaps item '${item}' (want +name or -name, e.g. +sys_admin)`);
    if (m[1] === '+') out.add(name);
    else out.delete(name);
  }
  return [...out];
}

/** FUSE_SECURITY_CTX (Linux 5.17): the guest sends a new file's security context with CREATE,
 *  MKNOD, MKDIR and SYMLINK, to be set as the file is made. Not served: refused, not ignored. */
const SECURITY_LABEL = '--security-label (-o security_label) is not supported: the guest\'s security context on file creation (FUSE_SECURITY_CTX) is not implemented';

/** The mapping options, checked by their own parsers (src/passthrough/id-map.ts, xattr-map.ts). */
function applyMapping(cfg: Config, a: { translateUid?: string[]; translateGid?: string[]; uidMap?: string[]; gidMap?: string[] }): void {
  try {
    cfg.idMap = idMapFromArgs(
      { translateUid: a.translateUid ?? [], translateGid: a.translateGid ?? [], uidMap: a.uidMap ?? [], gidMap: a.gidMap ?? [] },
      cfg.posixAcl, { euid: process.geteuid?.() ?? 0, egid: process.getegid?.() ?? 0 },
    );
    if (cfg.xattrMap !== null) parseXattrMap(cfg.xattrMap);
  } catch (e) {
    if (e instanceof IdMapError || e instanceof XattrMapError) throw new ConfigError(e.message);
    throw e;
  }
}

export function parseArgs(argv: string[]): Config {
  const a = yargs(argv)
    .scriptName('virtiofsd-ts')
    .usage('$0 --socket-path=PATH --shared-dir=DIR [options]\n\nvhost-user virtio-fs backend.')
    .parserConfiguration({ 'boolean-negation': true, 'camel-case-expansion': true })
    .option('shared-dir', { type: 'string', describe: 'Shared directory path' })
    .option('socket-path', { type: 'string', describe: 'vhost-user socket path' })
    .option('socket', { type: 'string', hidden: true, describe: 'Deprecated alias of --socket-path' })
    .option('fd', { type: 'number', describe: 'File descriptor of an already-listening vhost-user socket' })
    .option('cache', { type: 'string', default: 'auto', describe: 'Cache policy: never|metadata|auto|always' })
    .option('xattr', { type: 'boolean', default: false, describe: 'Enable extended attributes' })
    .option('posix-acl', { type: 'boolean', default: false, describe: 'Enable POSIX ACLs (implies --xattr)' })
    .option('announce-submounts', { type: 'boolean', default: true, describe: 'Tell the guest about host submounts (--no-announce-submounts to disable)' })
    .option('readonly', { type: 'boolean', default: false, describe: 'Export the directory read-only' })
    .option('writeback', { type: 'boolean', default: false, describe: 'Enable the guest writeback cache' })
    .option('allow-direct-io', { type: 'boolean', default: false, describe: 'Honour O_DIRECT from the guest' })
    .option('readdirplus', { type: 'boolean', describe: 'Offer READDIRPLUS (default: yes, except with --cache=never; --no-readdirplus: never)' })
    .option('killpriv-v2', { type: 'boolean', default: false, describe: 'Enable FUSE_HANDLE_KILLPRIV_V2' })
    .option('thread-pool-size', { type: 'number', default: 4, describe: 'I/O threads for READ/WRITE/FSYNC (0 = do them on the event loop)' })
    .option('log-level', { type: 'string', default: 'info', describe: 'error|warn|info|debug|trace|off' })
    .option('print-capabilities', { type: 'boolean', default: false, describe: 'Print vhost-user capabilities (JSON) and exit' })
    .option('sandbox', { type: 'string', describe: 'How the worker is isolated: namespace (default), chroot or none (see docs/security.md)' })
    .option('seccomp', { type: 'string', describe: 'What a syscall outside the worker\'s allowlist gets: kill (default), log, trap or none' })
    .option('modcaps', { type: 'string', describe: 'Capabilities the worker keeps, changed from the default set: +name or -name, colon-separated (e.g. +sys_admin:-mknod)' })
    .option('inode-file-handles', {
      type: 'string', default: 'prefer',
      describe: 'never|prefer|mandatory: how a restarted worker gets inodes back: file handles (needs CAP_DAC_READ_SEARCH), or O_PATH fds the keeper holds (never)',
    })
    .option('rlimit-nofile', { type: 'number', describe: 'Set RLIMIT_NOFILE to this (0: leave it; default: raise it to 1000000 where allowed); bounds what the guest may hold open' })
    .option('max-inodes', { type: 'number', default: DEFAULT_GUEST_LIMITS.inodes, describe: 'Most inodes the guest may hold node ids of (more: ENFILE)' })
    .option('max-open-files', { type: 'number', default: DEFAULT_GUEST_LIMITS.handles, describe: 'Most files and directories the guest may hold open (more: ENFILE)' })
    .option('max-lock-owners', { type: 'number', default: DEFAULT_GUEST_LIMITS.lockOwners, describe: 'Most POSIX lock owners (one per guest process and file) at a time (more: ENFILE)' })
    .option('translate-uid', { type: 'string', array: true, describe: 'Map UIDs between guest and host: TYPE:A:B:COUNT, TYPE one of guest, host, squash-guest, squash-host, map; or forbid-guest:A:COUNT (repeatable; docs/mapping.md)' })
    .option('translate-gid', { type: 'string', array: true, describe: 'Same as --translate-uid, for GIDs' })
    .option('uid-map', { type: 'string', array: true, describe: 'Unprivileged daemon: the guest sees host UID as NS (:NS:UID:1:, as libvirt passes it; docs/mapping.md)' })
    .option('gid-map', { type: 'string', array: true, describe: 'Unprivileged daemon: the guest sees host GID as NS (:NS:GID:1:)' })
    .option('xattrmap', { type: 'string', describe: 'Map xattr names between guest and host (rules :TYPE:SCOPE:KEY:PREPEND: or :map:KEY:PREPEND:; implies --xattr; docs/mapping.md)' })
    .option('security-label', { type: 'boolean', describe: 'Not supported (refused): the guest\'s security context on file creation' })
    .option('tag', { type: 'string', describe: 'Accepted for compatibility; QEMU sets the tag' })
    .option('socket-group', { type: 'string', describe: 'Group (name or gid) that may connect to the socket (mode 0770; otherwise 0700)' })
    .option('syslog', { type: 'boolean', describe: 'Accepted for compatibility; logs go to stderr' })
    .option('preserve-noatime', { type: 'boolean', describe: 'Accepted for compatibility' })
    .option('keeper', { type: 'boolean', default: true, describe: 'Serve rings from a restartable worker process (--no-keeper: one process)' })
    .option('spare-worker', { type: 'boolean', default: true, describe: 'Keep a loaded, idle worker ready to take over after a crash (--no-spare-worker: start one then)' })
    .option('worker-timeout', {
      type: 'number', default: 20,
      describe: 'Seconds a worker may take to load, recover or retire, or go without answering the keeper, before it is killed and replaced',
    })
    .option('restore-fd', { type: 'number', hidden: true, describe: 'Internal: keeper re-exec hand-over' })
    .option('num-request-queues', { type: 'number', default: 1, describe: 'Request queues offered to QEMU' })
    .option('o', { type: 'string', array: true, describe: 'C virtiofsd style options: source=DIR,cache=none|auto|always,xattr,...' })
    .option('f', { type: 'boolean', describe: 'Foreground (always)' })
    .option('d', { type: 'boolean', describe: 'Debug log level' })
    .version(false)
    .help()
    .strict()
    .exitProcess(true)
    .fail((msg, err) => { throw new ConfigError(err?.message ?? msg); })
    .parseSync();

  const cfg: Config = {
    sharedDir: a.sharedDir ?? '',
    socketPath: a.socketPath ?? a.socket,
    socketGroup: a.socketGroup,
    fd: a.fd,
    cache: CACHE[a.cache] ?? ((): CacheMode => { throw new ConfigError(`invalid --cache ${a.cache}`); })(),
    xattr: a.xattr || a.posixAcl,
    posixAcl: a.posixAcl,
    announceSubmounts: a.announceSubmounts,
    readonly: a.readonly,
    writeback: a.writeback,
    allowDirectIo: a.allowDirectIo,
    readdirplus: false,
    killprivV2: a.killprivV2,
    threadPoolSize: a.threadPoolSize,
    logLevel: a.d ? 'debug' : a.logLevel,
    printCapabilities: a.printCapabilities,
    sandbox: a.sandbox === undefined ? 'namespace' : oneOf('--sandbox', SANDBOX_MODES, a.sandbox),
    seccomp: a.seccomp === undefined ? 'kill' : oneOf('--seccomp', SECCOMP_MODES, a.seccomp),
    inodeFileHandles: HANDLE_MODES.find((m) => m === a.inodeFileHandles) ?? ((): never => { throw new ConfigError(`invalid --inode-file-handles ${a.inodeFileHandles}`); })(),
    rlimitNofile: a.rlimitNofile,
    limits: { ...DEFAULT_GUEST_LIMITS, inodes: a.maxInodes, handles: a.maxOpenFiles, lockOwners: a.maxLockOwners },
    numRequestQueues: a.numRequestQueues,
    workerCaps: a.modcaps !== undefined ? modcaps(DEFAULT_WORKER_CAPS, a.modcaps) : [...DEFAULT_WORKER_CAPS],
    keeper: a.keeper,
    spareWorker: a.spareWorker,
    workerTimeoutS: a.workerTimeout,
    restoreFd: a.restoreFd,
    idMap: { translateUid: [], translateGid: [], nsUid: [], nsGid: [] },
    xattrMap: a.xattrmap ?? null,
  };
  if (a.securityLabel) throw new ConfigError(SECURITY_LABEL);
  if (cfg.xattrMap !== null) cfg.xattr = true;
  const given = applyDashO(cfg, a.o ?? []);
  const sandboxGiven = given.sandbox || a.sandbox !== undefined;
  applyMapping(cfg, a);
  // As the C virtiofsd: with cache=never the attributes READDIRPLUS carries would be discarded,
  // so it is off unless asked for (QEMU commit ddcbabcb0ea1, "virtiofsd: passthrough_ll: disable
  // readdirplus on cache=never", 2020; there `-o readdirplus` still turns it on).
  cfg.readdirplus = given.readdirplus ?? a.readdirplus ?? cfg.cache !== 'never';
  if (cfg.printCapabilities) return cfg;
  if (!cfg.keeper) {
    // One Node process cannot enter namespaces (it is multithreaded from its start): the sandbox
    // is the worker's. --no-keeper is a comparison mode and runs without one.
    if (sandboxGiven && cfg.sandbox !== 'none') throw new ConfigError(`--sandbox=${cfg.sandbox} needs the keeper (the sandbox is the worker's); --no-keeper runs with --sandbox=none`);
    if (a.seccomp !== undefined && cfg.seccomp !== 'none') throw new ConfigError('--seccomp needs the keeper (the filter is the worker\'s); --no-keeper runs with --seccomp=none');
    cfg.sandbox = 'none';
    cfg.seccomp = 'none';
  }
  if (!LOG_LEVELS.includes(cfg.logLevel)) throw new ConfigError(`invalid log level ${cfg.logLevel}`);
  if (!cfg.sharedDir) throw new ConfigError('--shared-dir (or -o source=DIR) is required');
  if (cfg.socketPath === undefined && cfg.fd === undefined && cfg.restoreFd === undefined) throw new ConfigError('--socket-path or --fd is required');
  if (cfg.socketPath !== undefined && cfg.fd !== undefined) throw new ConfigError('--socket-path and --fd are mutually exclusive');
  if (!Number.isInteger(cfg.threadPoolSize) || cfg.threadPoolSize < 0 || cfg.threadPoolSize > 1024) throw new ConfigError('invalid --thread-pool-size');
  if (!Number.isFinite(cfg.workerTimeoutS) || cfg.workerTimeoutS < 0.1 || cfg.workerTimeoutS > 3600) throw new ConfigError('invalid --worker-timeout (0.1 to 3600 seconds)');
  if (!Number.isInteger(cfg.numRequestQueues) || cfg.numRequestQueues < 1 || cfg.numRequestQueues > 64) throw new ConfigError('invalid --num-request-queues');
  for (const [flag, v] of [['--max-inodes', cfg.limits.inodes], ['--max-open-files', cfg.limits.handles], ['--max-lock-owners', cfg.limits.lockOwners]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new ConfigError(`invalid ${flag} ${v} (want a positive integer)`);
  }
  if (cfg.rlimitNofile !== undefined && (!Number.isSafeInteger(cfg.rlimitNofile) || cfg.rlimitNofile < 0)) throw new ConfigError('invalid --rlimit-nofile');
  if (cfg.socketGroup !== undefined && cfg.socketPath === undefined) throw new ConfigError('--socket-group needs --socket-path (with --fd the socket is made by whoever passes it)');
  if (cfg.socketGroup === '') throw new ConfigError('--socket-group needs a group name or number');
  return cfg;
}

/** What `--print-capabilities` prints (the vhost-user backend JSON contract). */
export const CAPABILITIES = { type: 'fs', features: ['separate-options'] };
