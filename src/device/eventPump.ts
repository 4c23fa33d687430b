// The kernel's pacing of Dawn's event polling.
//
// dawn.node resolves every GPU promise (onSubmittedWorkDone, mapAsync, popErrorScope, ...) by
// polling its Dawn instance: while anything is pending it calls `setImmediate` on every turn of the
// event loop with a freshly made native function that processes Dawn's events and queues itself
// again (AsyncRunner::QueueTick in dawn's src/dawn/node/binding/AsyncRunner.cpp). A kernel that
// keeps a device busy always has something pending, so the main thread spins (most of a core,
// measured) and allocates ~50 MB/s of short-lived garbage; the collector then stops JavaScript for
// 10-20 ms several times a second, and no completion can be seen during a stop. On a CPU device
// (lavapipe) the spinning core is also taken from the device. docs/benchmarks.md has the figures.
//
// The pump takes those polls over for the whole Node process: it recognises Dawn's poll (an
// anonymous native function of no parameters given to setImmediate without arguments; a
// promise's resolve, also anonymous and native, takes one), passes every other
// setImmediate through untouched, and runs a Dawn poll no sooner than `intervalUs` after the
// previous one. When other JavaScript kept the loop busy for longer than that, the poll runs at
// once; otherwise the thread sleeps the rest of the interval (Atomics.wait: no CPU, no garbage)
// where it would have spun. A completion is seen at most one interval later than a spinning poll
// would see it, and other events wait at most one interval.
//
// Pacing is only right when the awaited completion is not imminent: a program whose small submits
// complete in tens of microseconds, or a round trip such as popErrorScope, would wait an interval
// for each. So the kernel's dispatchers advise the pump (adviseEventPump): each says when its next
// completion is worth polling for — now, when its oldest fence has no cost forecast and covers
// several submits, while work waits for the device to drain (Dispatcher.drainFirst), or while a
// program awaits a mapAsync (it is blocked on it; dawn.node alone would spin for it too) and no
// forecast end lies ahead; the forecast end, when the cost models
// predict one; no opinion otherwise (a single unforecast submit, no fence out). The pump polls at
// the soonest of those and the interval.
//
// It is reference-counted: every kernel that asks for it holds it, the shortest interval asked for
// wins, and the last release puts back the setImmediate it found. One pace serves every Dawn
// instance in the process (their polls cannot be told apart): with two instances busy at once,
// each is polled about every other interval. Benchmarks that run bare Dawn beside a kernel bypass
// the pump (bypassEventPump).
//
// It also keeps the kernel's fine-grained wake-ups (wakeAt): Node's timers have a granularity of a
// millisecond, too coarse for a scheduler whose atoms are a millisecond long, while the pump runs
// every `intervalUs` whenever a fence is pending, which is exactly when the dispatcher needs one.

import { keepShape } from '../keptShapes.js';
import { setTimerSlackNs, timerSlackNs } from '../libc.js';

export interface EventPumpStats {
  /** Whether Dawn's polls go through the pump now: some kernel holds it, it is installed as setImmediate, not bypassed. */
  active: boolean;
  /** The interval in force (µs; 0 when not installed). */
  intervalUs: number;
  /** Dawn polls the pump has run since it was first installed in this process. */
  polls: number;
  /** Time the main thread slept between polls instead of spinning (ms). */
  sleptMs: number;
}

type Callback = (...args: unknown[]) => void;

const nodeSetImmediate = globalThis.setImmediate;

// Node makes an `Immediate` object for every setImmediate, Dawn's polls included (a few per
// readback round), and each dies as soon as it has run. V8 keeps an object shape only while an
// object of it lives (see src/vgpu/shapeKeepers.ts), so a full collection that found none threw
// away the optimized code of Node's timer functions (`processImmediate`, `setImmediate`) and of
// every caller that inlined them. One cleared Immediate, kept, keeps that shape (src/keptShapes.ts).
clearImmediate(keepShape(nodeSetImmediate(() => {})));
/** A settled promise: its `then` queues a microtask without the AsyncResource queueMicrotask makes (another shape that dies). */
const settled = Promise.resolve();
/** What the pump forwards to: the setImmediate it found when it was installed. */
let forwardTo = nodeSetImmediate;
/** Atomics.wait needs a shared cell; nothing ever wakes it, so every wait runs to its timeout. */
const sleepCell = new Int32Array(new SharedArrayBuffer(4));
const holders = new Map<symbol, number>();
let intervalMs = 0;
let bypassed = false;
let lastPollAt = 0;
/** When the poll before the last one ran (see completedNoEarlierThanMs). */
let priorPollAt = 0;
/** When the last poll returned (see lastPollEndedMs). */
let lastPollEndedAt = NaN;
const counters = { polls: 0, sleptMs: 0 };

interface Wake {
  atMs: number;
  callback: () => void;
  /** Node's timer for the same moment: the wake when no poll comes first (and a millisecond late). */
  timer: NodeJS.Timeout;
}
/** Pending wake-ups, soonest first. */
let wakes: Wake[] = [];

/** Given performance.now(), when the next poll is worth running (ms; Infinity: no opinion). */
export type PollAdvisor = (nowMs: number) => number;
/** The dispatchers' advisors: an array, whose indexed loop in runPoll makes no iterator per poll. */
const advisors: PollAdvisor[] = [];

/**
 * Dawn's poll: dawn.node makes it with Napi::Function::New, so it is native, has no name and
 * declares no parameters (a promise's resolve and reject, also native and unnamed, declare one).
 * The cheap checks go first: most callbacks are named or declared functions.
 */
function isDawnPoll(callback: unknown, argumentCount: number): callback is Callback {
  return (
    argumentCount === 0 &&
    typeof callback === 'function' &&
    callback.length === 0 &&
    callback.name === '' &&
    Function.prototype.toString.call(callback).includes('[native code]')
  );
}

function runPoll(poll: Callback): void {
  if (intervalMs > 0 && !bypassed) {
    const now = performance.now();
    let due = lastPollAt + intervalMs;
    if (wakes.length > 0) due = Math.min(due, wakes[0].atMs);
    for (let i = 0; i < advisors.length; i++) due = Math.min(due, advisors[i](now));
    const rest = due - now;
    if (rest > 0) {
      Atomics.wait(sleepCell, 0, 0, rest);
      counters.sleptMs += rest;
    }
  }
  priorPollAt = lastPollAt;
  lastPollAt = performance.now();
  counters.polls++;
  poll();
  lastPollEndedAt = performance.now();
  // After the promise reactions the poll queued (a fence settling), so a woken scheduler sees them.
  if (wakes.length > 0) void settled.then(runDueWakesNow);
}

const runDueWakesNow = (): void => runDueWakes(performance.now());

function runDueWakes(now: number): void {
  while (wakes.length > 0 && wakes[0].atMs <= now) {
    const wake = wakes.shift()!;
    clearTimeout(wake.timer);
    wake.callback();
  }
}

/**
 * Calls `callback` once at about `atMs` (performance.now() time): at the first Dawn poll from
 * then on while the pump runs (within about one interval), else from a Node timer (millisecond
 * granularity, and possibly a fraction early: callers re-check their condition). Returns a cancel.
 */
export function wakeAt(atMs: number, callback: () => void): () => void {
  const wake: Wake = {
    atMs,
    callback,
    timer: setTimeout(() => {
      wakes = wakes.filter((w) => w !== wake);
      callback();
    }, Math.max(0, atMs - performance.now())).unref(),
  };
  const at = wakes.findIndex((w) => w.atMs > atMs);
  if (at === -1) wakes.push(wake);
  else wakes.splice(at, 0, wake);
  return () => {
    clearTimeout(wake.timer);
    wakes = wakes.filter((w) => w !== wake);
  };
}

function pacedSetImmediate(callback: Callback, ...args: unknown[]): NodeJS.Immediate {
  if (holders.size > 0 && !bypassed && isDawnPoll(callback, args.length)) return forwardTo(runPoll, callback);
  return forwardTo(callback, ...args);
}
// util.promisify(setImmediate) and the like read properties of the function itself.
Object.defineProperties(pacedSetImmediate, Object.getOwnPropertyDescriptors(nodeSetImmediate));

const installed = (): boolean => globalThis.setImmediate === (pacedSetImmediate as unknown);

/**
 * The timer slack the pump's thread had before the pump took it (ns), while the pump holds it; null
 * otherwise. A paced poll sleeps tens of microseconds, and Linux may end a timed wait up to the
 * thread's slack late (50 µs by default): measured on the 2-vCPU VM, an Atomics.wait of 10 µs took
 * 82 µs (p50), of 100 µs 172 µs, so each poll came ~70 µs after its time, and a program of small
 * atoms waited that long for each completion. With a slack of 1 µs: 31 and 121 µs.
 */
let slackBefore: number | null = null;
/** The slack the pump's thread sleeps with (ns). */
const PUMP_TIMER_SLACK_NS = 1000;

/**
 * The thread's slack: the pump's while it paces polls, the thread's own otherwise — bypassed
 * included, so that bare Dawn measured beside a kernel waits on this thread as a program without
 * gpunix does. (Threads made while the pump held it keep the slack they inherited, a device's
 * among them: docs/kernel.md, "Sleeping on time".)
 */
function applySlack(): void {
  const paced = holders.size > 0 && !bypassed && installed();
  if (paced && slackBefore === null) {
    const before = timerSlackNs();
    if (before !== null && before > PUMP_TIMER_SLACK_NS && setTimerSlackNs(PUMP_TIMER_SLACK_NS)) slackBefore = before;
  } else if (!paced && slackBefore !== null) {
    setTimerSlackNs(slackBefore);
    slackBefore = null;
  }
}

function refresh(): void {
  intervalMs = holders.size === 0 ? 0 : Math.min(...holders.values()) / 1000;
  if (holders.size > 0 && !installed()) {
    forwardTo = globalThis.setImmediate;
    globalThis.setImmediate = pacedSetImmediate as unknown as typeof setImmediate;
  } else if (holders.size === 0 && installed()) {
    globalThis.setImmediate = forwardTo;
  }
  applySlack();
  // If someone replaced setImmediate over ours meanwhile, theirs stays; ours then only forwards.
}

/**
 * Paces Dawn's polls to at most one per `intervalUs` until the returned release is called
 * (idempotent). Several holders: the shortest interval wins.
 */
export function holdEventPump(intervalUs: number): () => void {
  const holder = Symbol('event-pump-holder');
  holders.set(holder, intervalUs);
  refresh();
  return () => {
    if (holders.delete(holder)) refresh();
  };
}

/** Adds a dispatcher's advice on when to poll (see the top of this file); returns its removal. */
export function adviseEventPump(advisor: PollAdvisor): () => void {
  advisors.push(advisor);
  return () => {
    const at = advisors.indexOf(advisor);
    if (at !== -1) advisors.splice(at, 1);
  };
}

/**
 * Lets Dawn poll as dawn.node does by itself while `bypass` is true, though a kernel holds the pump:
 * benchmarks measure bare Dawn as shipped this way in the same process as gpunix.
 */
export function bypassEventPump(bypass: boolean): void {
  bypassed = bypass;
  applySlack();
}

/**
 * The earliest moment (performance.now() ms) a completion the kernel sees now can have happened,
 * or NaN when the pump is not pacing Dawn's polls (nothing is known of them then). Dawn reports a
 * completion at the first poll after it, so one seen now, in or right after the latest poll,
 * happened after the poll before it; less one interval, as the polls of several Dawn instances
 * in the process take turns. When the thread was kept busy (a long compile), this is before the
 * busy spell, however late the completion was seen: the watchdog measures from it (dispatch.ts).
 */
export function completedNoEarlierThanMs(): number {
  return eventPumpActive() && counters.polls > 1 ? priorPollAt - intervalMs : NaN;
}

/**
 * When the latest Dawn poll returned (performance.now() ms), or NaN when the pump is not pacing
 * Dawn's polls. A completion settling now was reported by that poll (promise reactions run before
 * the next one), so it happened before this moment, however late its settling reads the clock:
 * an earlier settling of the same poll may have issued work meanwhile, which on Dawn's GL backends
 * over llvmpipe runs its kernel inside the submit (Dispatcher.runCompleted).
 */
export function lastPollEndedMs(): number {
  return eventPumpActive() ? lastPollEndedAt : NaN;
}

/** Whether Dawn's polls go through the pump now (held, installed, not bypassed). */
export function eventPumpActive(): boolean {
  return holders.size > 0 && !bypassed && installed();
}

export function eventPumpStats(): EventPumpStats {
  return { active: eventPumpActive(), intervalUs: intervalMs * 1000, polls: counters.polls, sleptMs: counters.sleptMs };
}
