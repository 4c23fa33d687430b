// The watchdog rewrite: bounds every loop of a module by an iteration budget, so that every
// invocation of every kernel ends, whatever the program wrote. GPUs cannot cancel a running
// kernel; with this rewrite termination is a property of the code (see docs/atomizer.md).
//
// API
//   boundLoops(code, budget, mode, { uniformChecks, waitWeight }) -> BoundedModule
//
// One counter per invocation starts at the entry point's budget and counts down as loops run;
// every loop either checks it or is charged to it (splices on the wesl syntax tree's spans; no
// line breaks are added, so Dawn's messages keep the program's line numbers). Each loop gets one plan:
//   - counted: its body starts with `if (n < 1u) { n = 0u; break; } n -= 1u;`. An invocation out of
//     budget leaves each loop on its next iteration: nested loops unwind and the invocation ends.
//     An iteration that waits for its workgroup (a barrier in the loop, directly or through calls)
//     takes `waitWeight` instead of 1: on a CPU device a barrier costs many plain iterations.
//   - constant: `for (var i = A; i < B; i++)` with constant bounds, a body that cannot change `i`
//     and no `break`/`return` of its own: it ends by itself, runs unchecked, and `n -= min(n, TRIPS)`
//     follows it. Counting it would stop the compiler from unrolling it (half speed, lavapipe).
//   - guarded: a `while`/`for` whose condition requires `v < C` of a u32 counter that its body
//     steps once per iteration (the common `while (x && steps < MAX)`): it ends within C
//     iterations, runs unchecked, and what its guard advanced is charged after it.
//   - capped: a `for` whose bound cannot change while it runs (parameters, `let`s, constants), that
//     leaves only through its condition and waits for no one: its condition gains
//     `&& u32(i) - u32(A) < left` (the budget left; the compiler folds it into the loop bound) and
//     what ran is charged at its end; a loop the cap cut short spends the whole budget. An
//     innermost one (no loop or counter-taking call in it) is versioned: its trip count is known
//     before it starts, so when the budget covers it an unchanged copy (on one line) runs instead,
//     which the compiler can unroll; the extra condition alone cost lavapipe ~40 % on such a loop.
// Constant and guarded loops run unchecked only while their whole work (iterations times the
// unchecked work of their body, calls included) is at most MAX_STATIC_WORK. Charges are exact
// (never in advance), so a spent budget always means iterations really ran: the time check that
// ends a process whose loops were cut short (docs/kernel.md) can rely on it.
//
// The budget may differ by entry point (`Budget` as a function of its workgroup's invocations):
// a device that runs fewer invocations side by side than a workgroup has takes that much longer
// per iteration, so the kernel gives such entries less.
//
// Where the counter lives:
//   - mode 'shared': each entry point that reaches a loop declares `var n: u32 = BUDGET;`, and
//     every function that contains or calls a loop takes a pointer to it as a last parameter
//     (`ptr<function, u32>`), passed at each call: the budget bounds the whole invocation.
//   - mode 'local': each function counts its own loops in a local variable (the module's smallest
//     budget); calls from loops multiply the bound (still finite).
//   - uniformChecks: a counted loop that waits for its workgroup must be left by the whole
//     workgroup together, so it checks a workgroup stop flag through workgroupUniformLoad, raised
//     by any invocation out of budget.
// The budget-spent flag (option spentFlagBelow): each entry point, at each of its `return`s and
// at its end, does `if (n == 0u) { atomicStore(&gpunix_loop_spent, 1u); }` on a
// `var<storage, read_write>` at binding 0 of the highest bind group index the module leaves free,
// so the kernel learns from device memory, not from a clock, that an invocation spent its budget
// (every cut sets the counter to 0; src/vgpu/loopFlag.ts). At the end, not in the cut branches: a
// store in a loop body, even one never taken, cost lavapipe ~5 % on a loop nothing bounds
// (bench/watchdog, unbounded-while). Compute-only modules: a vertex stage may not write storage.
// A store needs no uniformity.
// Uniformity: a counter moves by what its loops ran, so it is uniform where they are; the plain
// check adds non-uniformity only where a non-uniform loop ran before, and the uniform check none.
// The kernel tries the forms in order and keeps the first Dawn accepts (src/vgpu/shaderModule.ts).

import type { ExpressionElem, FnElem, GlobalDeclarationElem } from 'wesl';
import { applySplices, evalInteger, identifierNames, NameAllocator, parseWgsl, skipTrivia, usedBindGroups, type Splice } from './source.js';

export type WatchdogMode = 'shared' | 'local';

export interface BoundedModule {
  /** The module with every loop bounded; the input unchanged when `loops` is 0 or it did not parse. */
  code: string;
  /** How many loops check the budget (counted and capped ones). */
  loops: number;
  /** How many loops end by themselves (constant and guarded ones): unchecked, charged when they end. */
  staticLoops: number;
  /** Set when the module could not be rewritten (it does not parse): it runs unbounded. */
  reason?: string;
  /** The bind group index of the budget-spent flag (binding 0), when the module can have one (BoundOptions.spentFlagBelow). */
  spentFlagGroup?: number;
  /** With spentFlagGroup: `code` with the budget-spent flag (its declaration and stores); `code` itself has none. */
  flaggedCode?: string;
}

/** The largest budget a rewrite writes (u32). */
export const MAX_LOOP_BUDGET = 0xffff_fff0;
/**
 * A loop that ends by itself runs unchecked when its whole work (trips times its body's unchecked
 * work, calls included) is at most this many iterations: the longest stretch between two checks.
 */
export const MAX_STATIC_WORK = 1 << 16;


const LOOP_KINDS = new Set(['loop', 'for', 'while']);
const ENTRY_ATTRIBUTES = ['compute', 'vertex', 'fragment'];
/** Properties of wesl's tree that lead back up or sideways (scopes, identifiers), not into the code. */
const NOT_CODE = new Set(['ident', 'scope', 'dependentScope', 'parent', 'refIdentElem', 'srcModule', 'contents']);

interface Node {
  kind?: string;
  start: number;
  end: number;
  [key: string]: unknown;
}

/** How one loop is bounded (see the file comment). */
type LoopPlan =
  | { how: 'counted' }
  | { how: 'capped'; cap: CappedFor }
  | { how: 'constant'; trips: number }
  | { how: 'guarded'; guard: string };

/** Bounds every loop in `code` by `budget` iterations per invocation (see the file comment). */
export function boundLoops(code: string, budget: Budget, mode: WatchdogMode = 'shared', options: BoundOptions = {}): BoundedModule {
  const parsed = parseWgsl(code);
  if (!parsed.ok) return { code, loops: 0, staticLoops: 0, reason: parsed.message };
  const budgetOf = (invocations: number | null): number => Math.max(1, Math.min(MAX_LOOP_BUDGET, Math.floor(typeof budget === 'number' ? budget : budget(invocations))));
  const waitWeight = Math.max(1, Math.min(MAX_LOOP_BUDGET, Math.floor(options.waitWeight ?? 1)));
  const fns = parsed.decls.filter((d): d is FnElem => d.kind === 'fn');
  const byName = new Map(fns.map((f) => [f.name.ident.originalName, f]));
  const text = (n: Node) => code.slice(n.start, n.end);
  const calleeOf = (node: Node): FnElem | undefined => {
    const target = node.function as Node | undefined;
    return target?.kind === 'ref' ? byName.get(text(target)) : undefined;
  };

  // Decide each loop's plan. A loop that ends by itself may run unchecked only while its whole
  // work (its iterations times the unchecked work of its body, calls included) is small: that
  // work runs between two checks of the budget.
  const plans = new Map<Node, LoopPlan>();
  const ownerOf = new Map<Node, FnElem>();
  const fnWork = new Map<FnElem, number>();
  /** Iterations the code under `node` runs in loops that are not checked (constant and guarded ones). */
  const uncheckedWork = (node: Node, fn: FnElem): number => {
    let work = 0;
    walk(node, (n) => {
      if (n !== node && n.kind && LOOP_KINDS.has(n.kind)) {
        work += plan(n, fn);
        return false;
      }
      if (n.kind === 'call-expression') {
        const callee = calleeOf(n);
        if (callee) work += workOf(callee);
      }
      return true;
    });
    return work;
  };
  const workOf = (fn: FnElem): number => {
    let work = fnWork.get(fn);
    if (work === undefined) {
      fnWork.set(fn, 0); // WGSL has no recursion; this only guards against a malformed module
      work = uncheckedWork(fn.body as unknown as Node, fn);
      fnWork.set(fn, work);
    }
    return work;
  };
  /** Plans `loop` once; returns the unchecked work it adds to the code around it. */
  const plan = (loop: Node, fn: FnElem): number => {
    ownerOf.set(loop, fn);
    // One iteration's unchecked work: the body, and the condition and update (calls in them run every time).
    const parts = [loop.body, loop.condition, loop.update].filter((n): n is Node => !!n && typeof (n as Node).start === 'number');
    const inner = 1 + parts.reduce((sum, n) => sum + uncheckedWork(n, fn), 0);
    const exits = exitsOf(loop.body as Node);
    const trips = exits.break || exits.return ? null : constantTripCount(loop, fn, code, parsed.decls);
    if (trips !== null && trips * inner <= MAX_STATIC_WORK) {
      plans.set(loop, { how: 'constant', trips });
      return trips * inner;
    }
    const guarded = exits.return ? null : guardedTripCount(loop, fn, code, parsed.decls);
    if (guarded && guarded.trips * inner <= MAX_STATIC_WORK) {
      plans.set(loop, { how: 'guarded', guard: guarded.guard });
      return guarded.trips * inner;
    }
    const cap = exits.break || exits.return || containsBarrier(loop.body as Node, code) ? null : cappableFor(loop, fn, code, parsed.decls);
    plans.set(loop, cap ? { how: 'capped', cap } : { how: 'counted' });
    return 0;
  };
  for (const fn of fns) workOf(fn);
  const planList = [...plans.values()];
  const checked = planList.filter((p) => p.how === 'counted' || p.how === 'capped').length;
  const staticLoops = planList.length - checked;
  if (plans.size === 0) return { code, loops: 0, staticLoops: 0 };

  const loopsOf = new Map<FnElem, Node[]>(fns.map((f) => [f, []]));
  for (const [loop, fn] of ownerOf) loopsOf.get(fn)!.push(loop);
  const callsOf = new Map<FnElem, Array<{ node: Node; callee: FnElem }>>();
  for (const fn of fns) {
    const calls: Array<{ node: Node; callee: FnElem }> = [];
    walk(fn.body as unknown as Node, (n) => {
      const callee = n.kind === 'call-expression' ? calleeOf(n) : undefined;
      if (callee) calls.push({ node: n, callee });
      return true;
    });
    callsOf.set(fn, calls);
  }
  /** `start` and every function that calls one of them, directly or not (no recursion: a fixpoint ends). */
  const closeOverCallers = (start: FnElem[]): Set<FnElem> => {
    const set = new Set(start);
    for (let changed = true; changed; ) {
      changed = false;
      for (const fn of fns) {
        if (!set.has(fn) && callsOf.get(fn)!.some((c) => set.has(c.callee))) {
          set.add(fn);
          changed = true;
        }
      }
    }
    return set;
  };
  // Every loop checks or charges the counter: the functions that contain or call one need it.
  const reaches = closeOverCallers(fns.filter((f) => loopsOf.get(f)!.length > 0));
  // Functions that wait for their workgroup (a barrier, directly or through calls).
  const waiting = closeOverCallers(fns.filter((f) => containsBarrier(f.body as unknown as Node, code)));
  const loopWaits = (loop: Node): boolean => {
    let waits = false;
    walk(loop.body as Node, (n) => {
      if (n.kind === 'call-expression') {
        const callee = calleeOf(n);
        if ((callee && waiting.has(callee)) || (!callee && isBarrierCall(n, code))) waits = true;
      }
      return !waits;
    });
    return waits;
  };

  const localBudget = Math.min(...fns.filter(isEntryFn).map((f) => budgetOf(workgroupInvocations(f, code, parsed.decls))), budgetOf(null));
  const names = new NameAllocator(identifierNames(parsed.ast));
  const counter = names.fresh('gpunix_loop_budget');
  const stop = options.uniformChecks ? names.fresh('gpunix_loop_stop') : '';
  let stopUsed = false;
  // An invocation that ends with its budget spent marks the budget-spent flag, where the module may have one (compute entry points only).
  const entries = fns.filter(isEntryFn);
  const flagAt = options.spentFlagBelow !== undefined && checked > 0 && entries.length > 0 && entries.every(isComputeFn) ? flagGroup(parsed.decls, options.spentFlagBelow) : null;
  const spent = flagAt !== null ? names.fresh('gpunix_loop_spent') : '';
  // The flag's edits, kept apart: the module is given both without and with them (flaggedCode),
  // and after the others at the same place (a charge at the end of the entry's last loop comes first).
  const flagSplices: Splice[] = [];
  const splices: Splice[] = [];
  for (const fn of reaches) {
    const ownsCounter = mode === 'local' || isEntryFn(fn);
    const value = ownsCounter ? counter : `(*${counter})`;
    const pointer = ownsCounter ? `&${counter}` : counter;
    if (ownsCounter && (mode === 'shared' || loopsOf.get(fn)!.length > 0)) {
      // The entry's budget, by its workgroup's size; a function's own counter (mode 'local') does
      // not know its entry, so it gets the smallest of the module's.
      const start = mode === 'shared' ? budgetOf(workgroupInvocations(fn, code, parsed.decls)) : localBudget;
      splices.push({ start: fn.body.start + 1, end: fn.body.start + 1, text: ` var ${counter}: u32 = ${start}u;` });
    }
    if (flagAt !== null && ownsCounter && isEntryFn(fn)) {
      // The invocation's budget spent (a loop cut, or the budget run out to the last iteration):
      // marked as it ends, at each return of the entry point and at its end, not in the loops.
      const markSpent = `if (${counter} == 0u) { atomicStore(&${spent}, 1u); } `;
      walk(fn.body as unknown as Node, (n) => {
        if (n.kind === 'return') flagSplices.push({ start: n.start, end: n.start, text: markSpent });
        return true;
      });
      const close = fn.body.end - 1;
      if (code[close] !== '}') return { code, loops: 0, staticLoops, reason: `could not locate the end of '${fn.name.ident.originalName}'` };
      flagSplices.push({ start: close, end: close, text: markSpent });
    }
    if (!ownsCounter) {
      const at = paramListEnd(code, fn);
      if (at === null) return { code, loops: 0, staticLoops, reason: `could not locate the parameter list of '${fn.name.ident.originalName}'` };
      splices.push({ start: at.offset, end: at.offset, text: `${at.needsComma ? ', ' : ''}${counter}: ptr<function, u32>` });
    }
    const charge = (amount: string) => `${value} -= min(${value}, ${amount});`;
    /** True when the rewrite changes nothing inside `loop` (no loop in it, no call that takes the counter): its text can be copied as is. */
    const splicesNothingInside = (loop: Node): boolean => {
      let clean = true;
      walk(loop, (n) => {
        if (n !== loop && n.kind && LOOP_KINDS.has(n.kind)) clean = false;
        if (n.kind === 'call-expression') {
          const callee = calleeOf(n);
          if (callee && reaches.has(callee)) clean = false;
        }
        return clean;
      });
      return clean;
    };
    for (const loop of loopsOf.get(fn)!) {
      const p = plans.get(loop)!;
      const body = loop.body as Node | undefined;
      // The body's span may start at an attribute (`loop @diagnostic(...) {`): its brace comes after.
      const open = body ? code.indexOf('{', body.start) : -1;
      if (!body || open < 0 || open >= body.end) return { code, loops: 0, staticLoops, reason: `could not locate the body of a ${loop.kind} loop` };
      switch (p.how) {
        case 'constant':
          // It ends by itself; what it ran is charged when it ends.
          splices.push({ start: loop.end, end: loop.end, text: ` ${charge(`${p.trips}u`)}` });
          break;
        case 'guarded': {
          // Its guard counts what it runs: that is charged when it ends.
          const from = names.fresh('gpunix_guard_from');
          splices.push({ start: loop.start, end: loop.start, text: `let ${from} = ${p.guard}; ` });
          splices.push({ start: loop.end, end: loop.end, text: ` ${charge(`(${p.guard} - ${from})`)}` });
          break;
        }
        case 'capped': {
          // At most the iterations the budget has left, unchecked (the compiler folds the cap into
          // the loop's own bound); what ran is charged at the end, and a cut-short loop spends it all.
          const left = names.fresh('gpunix_loop_left');
          const trips = names.fresh('gpunix_loop_trips');
          const [a, b, i] = [p.cap.start, p.cap.end, p.cap.variable];
          const tripCount = `select(0u, u32(${b}) - u32(${a}), (${b}) > (${a}))`;
          if (splicesNothingInside(loop)) {
            // Versioned: its trip count is known before it starts (bound and start cannot change),
            // so when the budget covers it the loop runs as written: an extra condition in the
            // loop stops LLVM from unrolling and vectorizing it (lavapipe ran such a kernel at about
            // 0.6 of its speed). Only innermost loops, so no code is copied more than once.
            splices.push({
              start: loop.start,
              end: loop.start,
              text: `{ let ${left} = ${value}; let ${trips} = ${tripCount}; if (${trips} <= ${left}) { ${onOneLine(code.slice(loop.start, loop.end))} } else { `,
            });
            splices.push({ start: p.cap.condition.start, end: p.cap.condition.start, text: '(' });
            splices.push({ start: p.cap.condition.end, end: p.cap.condition.end, text: `) && (u32(${i}) - u32(${a}) < ${left})` });
            splices.push({ start: loop.end, end: loop.end, text: ` } ${charge(`min(${trips}, ${left})`)} if (${trips} > ${left}) { ${value} = 0u; } }` });
            break;
          }
          splices.push({ start: loop.start, end: loop.start, text: `{ let ${left} = ${value}; ` });
          splices.push({ start: p.cap.condition.start, end: p.cap.condition.start, text: '(' });
          splices.push({ start: p.cap.condition.end, end: p.cap.condition.end, text: `) && (u32(${i}) - u32(${a}) < ${left})` });
          splices.push({
            start: loop.end,
            end: loop.end,
            text: ` let ${trips} = ${tripCount}; ${charge(`min(${trips}, ${left})`)} if (${trips} > ${left}) { ${value} = 0u; } }`,
          });
          break;
        }
        case 'counted': {
          // A loop that waits for its workgroup must be left by all of it together: every
          // invocation reads one stop flag (workgroupUniformLoad), raised by any past its budget.
          // An iteration that waits for its workgroup costs `waitWeight` (a barrier can cost far more
          // than the calibration loop's whole iteration, e.g. on a CPU device).
          const waits = loopWaits(loop);
          const weight = waits ? waitWeight : 1;
          const uniform = options.uniformChecks && waits;
          stopUsed ||= uniform === true;
          const text = uniform
            ? `if (${value} < ${weight}u) { ${value} = 0u; ${stop} = 1u; } else { ${value} -= ${weight}u; } if (workgroupUniformLoad(&${stop}) != 0u) { break; }`
            : `if (${value} < ${weight}u) { ${value} = 0u; break; } ${value} -= ${weight}u;`;
          splices.push({ start: open + 1, end: open + 1, text: ` ${text}` });
          break;
        }
      }
    }
    if (mode === 'shared') {
      for (const { node, callee } of callsOf.get(fn)!) {
        if (!reaches.has(callee) || isEntryFn(callee)) continue;
        const close = node.end - 1;
        if (code[close] !== ')') return { code, loops: 0, staticLoops, reason: 'could not locate the end of a call' };
        const args = (node.arguments as Node[] | undefined) ?? [];
        const trailingComma = args.length > 0 && code[skipTrivia(code, args[args.length - 1].end)] === ',';
        splices.push({ start: close, end: close, text: `${args.length > 0 && !trailingComma ? ', ' : ''}${pointer}` });
      }
    }
  }
  /** Declarations appended at the end of the module. */
  const tail = (lines: string[]): Splice[] => (lines.length === 0 ? [] : [{ start: code.length, end: code.length, text: `${code.endsWith('\n') ? '' : '\n'}${lines.join('\n')}\n` }]);
  const declared = stopUsed ? [`var<workgroup> ${stop}: u32;`] : [];
  const rewritten = applySplices(code, [...splices, ...tail(declared)]);
  const check = parseWgsl(rewritten);
  if (!check.ok) return { code, loops: 0, staticLoops, reason: `internal error: the bounded module does not parse (${check.message})` };
  if (flagAt === null) return { code: rewritten, loops: checked, staticLoops };
  const flaggedCode = applySplices(code, [...splices, ...flagSplices, ...tail([...declared, `@group(${flagAt}) @binding(0) var<storage, read_write> ${spent}: atomic<u32>;`])]);
  // A flagged form that does not parse is left out; the module is bounded all the same.
  if (!parseWgsl(flaggedCode).ok) return { code: rewritten, loops: checked, staticLoops };
  return { code: rewritten, loops: checked, staticLoops, spentFlagGroup: flagAt, flaggedCode };
}

/**
 * A module's loop budget: a number, or per entry point from the invocations of its workgroup
 * (null when @workgroup_size is not a constant the rewrite can evaluate).
 */
export type Budget = number | ((workgroupInvocations: number | null) => number);

export interface BoundOptions {
  /** Counted loops that wait for their workgroup check a workgroup stop flag (see the file comment). */
  uniformChecks?: boolean;
  /** What one iteration of a counted loop that waits for its workgroup takes from the budget (default 1). */
  waitWeight?: number;
  /**
   * The device's maxBindGroups, to give the module a budget-spent flag too (BoundedModule.flaggedCode)
   * at the highest bind group index below it that the module does not use (binding 0): an invocation that ends with its
   * budget spent (a loop cut) stores 1 there, so that the kernel can tell from device memory (see
   * the file comment). Only for modules
   * with checked loops whose entry points are all compute ones (a vertex stage may not write
   * storage); otherwise no flag.
   */
  spentFlagBelow?: number;
}

/**
 * The budget-spent flag's group: the highest index below `maxBindGroups` the module leaves free
 * (the atomizer's record, when it needs a group, takes the one past the module's highest), or
 * null when every one is used or a group is not a constant.
 */
function flagGroup(decls: GlobalDeclarationElem[], maxBindGroups: number): number | null {
  const used = usedBindGroups(decls);
  if (typeof used === 'string') return null;
  for (let g = maxBindGroups - 1; g >= 0; g--) if (!used.has(g)) return g;
  return null;
}

function isComputeFn(fn: FnElem): boolean {
  return fn.attributes?.some((a) => a.attribute.kind === '@attribute' && a.attribute.name === 'compute') ?? false;
}

function isEntryFn(fn: FnElem): boolean {
  return fn.attributes?.some((a) => a.attribute.kind === '@attribute' && ENTRY_ATTRIBUTES.includes(a.attribute.name)) ?? false;
}

/** Invocations in one workgroup of entry point `fn`: the product of its @workgroup_size, or null when not constant. */
function workgroupInvocations(fn: FnElem, code: string, decls: GlobalDeclarationElem[]): number | null {
  const attr = fn.attributes?.find((a) => a.attribute.kind === '@attribute' && a.attribute.name === 'workgroup_size');
  if (!attr || attr.attribute.kind !== '@attribute') return null;
  let product = 1;
  for (const param of attr.attribute.params ?? []) {
    const value = evalInteger(param.expression as ExpressionElem, decls);
    if (value === undefined || value < 1) return null;
    product *= value;
  }
  return product;
}

/** The builtins that wait for the whole workgroup (or subgroup), and so need uniform control flow. */
const BARRIER_CALLS = /^(workgroupBarrier|storageBarrier|textureBarrier|workgroupUniformLoad|subgroup\w*|quad\w*)$/;

function isBarrierCall(call: Node, code: string): boolean {
  const f = call.function as Node | undefined;
  return f?.kind === 'ref' && BARRIER_CALLS.test(code.slice(f.start, f.end));
}

/** Whether the code under `node` calls a barrier-like builtin itself. */
function containsBarrier(node: Node, code: string): boolean {
  let found = false;
  walk(node, (n) => {
    if (n.kind === 'call-expression' && isBarrierCall(n, code)) found = true;
    return !found;
  });
  return found;
}

/** How a loop body can leave its loop other than through the condition: its own `break`s, and `return`s. */
function exitsOf(body: Node): { break: boolean; return: boolean } {
  const exits = { break: false, return: false };
  const visit = (n: Node, depth: number): void => {
    walk(n, (m) => {
      if (m === n) return true;
      if (m.kind === 'return') exits.return = true;
      if (m.kind === 'break' && depth === 0) exits.break = true;
      if ((m.kind && LOOP_KINDS.has(m.kind)) || m.kind === 'switch') {
        visit(m, depth + 1);
        return false;
      }
      return true;
    });
  };
  visit(body, 0);
  return exits;
}

/**
 * The number of iterations of `for (var i = A; i < B; i++)` (also `<=`, `i += 1`, `i = i + 1`)
 * when A and B are constants and nothing in the body can change `i`; null for any other loop.
 */
function constantTripCount(loop: Node, fn: FnElem, code: string, decls: GlobalDeclarationElem[], anyEnd = false): number | null {
  if (loop.kind !== 'for') return null;
  const init = loop.init as Node | undefined;
  const condition = loop.condition as Node | undefined;
  const update = loop.update as Node | undefined;
  if (init?.kind !== 'var' && init?.kind !== 'let') return null;
  if (!init || !condition || !update || !init.init) return null;
  const nameNode = (init.name as Node | undefined)?.decl as Node | undefined;
  if (!nameNode) return null;
  const name = code.slice(nameNode.start, nameNode.end);
  const isName = (n: unknown) => (n as Node | undefined)?.kind === 'ref' && code.slice((n as Node).start, (n as Node).end) === name;
  // The bounds: literals, or module constants no local name of the function shadows.
  const locals = localNames(fn, code);
  const constant = (e: unknown): number | undefined => {
    let unshadowed = true;
    walk(e as Node, (n) => {
      if (n.kind === 'ref' && locals.has(code.slice(n.start, n.end))) unshadowed = false;
      return true;
    });
    return unshadowed ? evalInteger(e as ExpressionElem, decls) : undefined;
  };
  const start = constant(init.init);
  if (condition.kind !== 'binary-expression' || !isName(condition.left)) return null;
  const op = (condition.operator as { value: string }).value;
  if (op !== '<' && op !== '<=') return null;
  const end = anyEnd ? 0 : constant(condition.right);
  // `i <= MAX` of its type never fails: such a loop does not end by itself.
  if (op === '<=' && end !== undefined && end >= I32_MAX) return null;
  if (start === undefined || end === undefined) return null;
  if (!isUnitIncrement(update, isName, constant)) return null;
  // Nothing in the body may write `i` or take its address (a shadowing declaration counts too: cautious).
  let written = false;
  walk(loop.body as Node, (n) => {
    if ((n.kind === 'assign' && isName(n.lhs)) || ((n.kind === 'increment' || n.kind === 'decrement') && isName(n.target))) written = true;
    if (n.kind === 'unary-expression' && (n.operator as { value: string }).value === '&' && isName(n.expression)) written = true;
    if ((n.kind === 'var' || n.kind === 'let') && (n.name as Node | undefined)?.decl && code.slice(((n.name as Node).decl as Node).start, ((n.name as Node).decl as Node).end) === name) written = true;
    return !written;
  });
  if (written) return null;
  return Math.max(0, end - start + (op === '<=' ? 1 : 0));
}

/**
 * At most how many times a `while` or `for` runs when one of the terms its condition requires
 * (`a && b && ...`) is `v < C` or `v <= C` with C a constant and v a u32 variable of the function
 * that the body increments exactly once per iteration, as a statement of its own at the top of
 * the body (`v++`, `v += 1u`, `v = v + 1u`), writes nowhere else, and that no `continue` skips:
 * v starts at 0 or more and grows by one each time, so the loop stops within C (+1) iterations.
 * The common `while (x && steps < MAX)` shape. Null for any other loop.
 */
function guardedTripCount(loop: Node, fn: FnElem, code: string, decls: GlobalDeclarationElem[]): { trips: number; guard: string } | null {
  if (loop.kind !== 'while' && loop.kind !== 'for') return null;
  const body = loop.body as Node | undefined;
  let condition = loop.condition as Node | undefined;
  while (condition?.kind === 'parenthesized-expression') condition = condition.expression as Node;
  if (!condition || !body) return null;
  const terms: Node[] = [];
  const collect = (e: Node): void => {
    while (e.kind === 'parenthesized-expression') e = e.expression as Node;
    if (e.kind === 'binary-expression' && (e.operator as { value: string }).value === '&&') {
      collect(e.left as Node);
      collect(e.right as Node);
    } else terms.push(e);
  };
  collect(condition);
  const u32Vars = u32Variables(fn, code);
  const userFns = new Set(decls.filter((d) => d.kind === 'fn').map((d) => (d.kind === 'fn' ? d.name.ident.originalName : '')));
  const locals = localNames(fn, code);
  const textOf = (n: Node) => code.slice(n.start, n.end);
  const isRef = (n: unknown, name: string) => (n as Node | undefined)?.kind === 'ref' && textOf(n as Node) === name;
  let best: { trips: number; guard: string } | null = null;
  for (const term of terms) {
    if (term.kind !== 'binary-expression') continue;
    const op = (term.operator as { value: string }).value;
    const left = term.left as Node;
    if ((op !== '<' && op !== '<=') || left.kind !== 'ref') continue;
    const name = textOf(left);
    if (!u32Vars.has(name)) continue;
    // The guard is read before the loop and after it: a `for`'s own variable is out of scope there.
    const init = loop.init as Node | undefined;
    const initDecl = (init?.name as Node | undefined)?.decl as Node | undefined;
    if (initDecl && textOf(initDecl) === name) continue;
    let shadowed = false;
    walk(term.right as Node, (n) => {
      if (n.kind === 'ref' && locals.has(textOf(n))) shadowed = true;
      return true;
    });
    const bound = shadowed ? undefined : evalInteger(term.right as unknown as ExpressionElem, decls);
    if (bound === undefined || bound < 0) continue;
    // One increment, a statement of the body itself; no other write, no address taken, no continue.
    const isIncrement = (n: Node) =>
      isUnitIncrement(
        n,
        (m) => isRef(m, name),
        (e) => evalInteger(e as ExpressionElem, decls),
      );
    const topLevel = ((body.body as Node[] | undefined) ?? []).filter(isIncrement);
    let writes = 0;
    let skips = false;
    const scan = (n: Node, inNestedLoop: boolean): void => {
      walk(n, (m) => {
        if (m === n) return true;
        if ((m.kind === 'assign' && isRef(m.lhs, name)) || ((m.kind === 'increment' || m.kind === 'decrement') && isRef(m.target, name))) writes++;
        if (m.kind === 'unary-expression' && (m.operator as { value: string }).value === '&' && isRef(m.expression, name)) writes += 2;
        if (m.kind === 'continue' && !inNestedLoop) skips = true;
        if (m.kind && LOOP_KINDS.has(m.kind)) {
          scan(m, true);
          return false;
        }
        return true;
      });
    };
    scan(body, false);
    if (loop.kind === 'for' && loop.update) scan(loop.update as Node, false);
    if (loop.kind === 'for' && loop.init) scan(loop.init as Node, false);
    // Nothing else may reach the guard: no address of it anywhere in the function (a pointer could
    // reset it), and no call of the module's functions in the condition.
    walk(fn.body as unknown as Node, (m) => {
      if (m.kind === 'unary-expression' && (m.operator as { value: string }).value === '&' && isRef(m.expression, name)) writes += 2;
      return true;
    });
    walk(condition, (m) => {
      if (m.kind === 'call-expression' && (m.function as Node | undefined)?.kind === 'ref' && userFns.has(textOf(m.function as Node))) writes += 2;
      return true;
    });
    if (topLevel.length !== 1 || writes !== 1 || skips) continue;
    const trips = bound + (op === '<=' ? 1 : 0);
    if (best === null || trips < best.trips) best = { trips, guard: name };
  }
  return best;
}

/** The function's local variables declared u32 (`var v: u32 ...` or `var v = <literal>u`). */
function u32Variables(fn: FnElem, code: string): Set<string> {
  const vars = new Set<string>();
  const seen = new Map<string, number>();
  walk(fn.body as unknown as Node, (n) => {
    if (n.kind === 'var' || n.kind === 'let' || n.kind === 'const') {
      const nameNode = n.name as Node | undefined;
      const decl = nameNode?.decl as Node | undefined;
      if (!decl) return true;
      const name = code.slice(decl.start, decl.end);
      seen.set(name, (seen.get(name) ?? 0) + 1);
      const typeRef = nameNode?.typeRef as Node | undefined;
      const init = n.init as Node | undefined;
      const isU32 = typeRef ? code.slice(typeRef.start, typeRef.end).trim() === 'u32' : init?.kind === 'literal' && /^[0-9]+u$|^0[xX][0-9a-fA-F]+u$/.test(String(init.value));
      if (n.kind === 'var' && isU32) vars.add(name);
    }
    return true;
  });
  // A name declared twice (shadowing) is left out: which one a reference means is not looked up here.
  for (const [name, count] of seen) if (count > 1 || fn.params.some((p) => p.name.decl.ident.originalName === name)) vars.delete(name);
  return vars;
}

/** A `for` whose trip count is known when it starts: where its bound goes, and its parts' text. */
interface CappedFor {
  condition: Node;
  variable: string;
  /** The start value's text (a constant) and the bound's (an expression that cannot change in the loop). */
  start: string;
  end: string;
}

/** Builtins a loop bound may call and stay the same through the loop (their arguments are checked too, but arrayLength's). */
const PURE_BUILTINS = new Set(['u32', 'i32', 'min', 'max', 'select', 'abs', 'arrayLength']);

/**
 * `for (var i = A; i < B; i++)` (also `i += 1`, `i = i + 1`) with A an integer constant, B an
 * expression of parameters, `let`s, constants and pure builtins (it cannot change while the loop
 * runs), and a body that changes `i` nowhere and leaves only through its condition (no `break` of
 * its own, no `return`): its trip count is known when it starts, so it can be charged at its end.
 */
function cappableFor(loop: Node, fn: FnElem, code: string, decls: GlobalDeclarationElem[]): CappedFor | null {
  if (loop.kind !== 'for') return null;
  const init = loop.init as Node | undefined;
  const condition = loop.condition as Node | undefined;
  if (!init || !condition || (init.kind !== 'var' && init.kind !== 'let') || !init.init) return null;
  if (evalInteger(init.init as unknown as ExpressionElem, decls) === undefined) return null;
  if (condition.kind !== 'binary-expression' || (condition.operator as { value: string }).value !== '<') return null;
  // Everything else a constant trip count needs (the update, nothing writing `i`) is checked there:
  // ask it with the bound taken as a constant.
  const nameNode = (init.name as Node).decl as Node;
  const variable = code.slice(nameNode.start, nameNode.end);
  const left = condition.left as Node;
  if (left.kind !== 'ref' || code.slice(left.start, left.end) !== variable) return null;
  if (constantTripCount(loop, fn, code, decls, true) === null) return null;
  const kinds = localKinds(fn, code);
  const globals = new Set(decls.filter((d) => d.kind === 'gvar').map((d) => (d.kind === 'gvar' ? d.name.decl.ident.originalName : '')));
  const userFns = new Set(decls.filter((d) => d.kind === 'fn').map((d) => (d.kind === 'fn' ? d.name.ident.originalName : '')));
  const pointerLets = pointerLetNames(fn, code);
  // The bound must not change while the loop runs: parameters, `let`s (not pointers), constants
  // and pure builtins only; no dereference or address (a pointer's target can change).
  let invariant = true;
  walk(condition.right as Node, (n) => {
    if (n.kind === 'unary-expression' && ['*', '&'].includes((n.operator as { value: string }).value)) invariant = false;
    if (n.kind === 'call-expression') {
      const callee = n.function as Node;
      const name = callee?.kind === 'ref' ? code.slice(callee.start, callee.end) : '';
      if (!PURE_BUILTINS.has(name) || kinds.has(name) || userFns.has(name)) invariant = false;
      return invariant && name !== 'arrayLength';
    }
    if (n.kind === 'ref') {
      const name = code.slice(n.start, n.end);
      const declared = kinds.get(name);
      if (name === variable || globals.has(name) || declared?.has('var') || pointerLets.has(name)) invariant = false;
    }
    return invariant;
  });
  if (!invariant) return null;
  const startNode = init.init as Node;
  return { condition, variable, start: code.slice(startNode.start, startNode.end), end: code.slice((condition.right as Node).start, (condition.right as Node).end) };
}

/** The function's `let`s (and parameters) that may hold a pointer: initialized with `&` or `*`, or typed ptr. */
function pointerLetNames(fn: FnElem, code: string): Set<string> {
  const names = new Set<string>();
  for (const p of fn.params) if (p.name.typeRef && code.slice(p.name.typeRef.start, p.name.typeRef.end).includes('ptr')) names.add(p.name.decl.ident.originalName);
  walk(fn.body as unknown as Node, (n) => {
    if (n.kind !== 'let') return true;
    const nameNode = n.name as Node | undefined;
    const decl = nameNode?.decl as Node | undefined;
    if (!decl) return true;
    let pointer = false;
    const typeRef = nameNode?.typeRef as Node | undefined;
    if (typeRef && code.slice(typeRef.start, typeRef.end).includes('ptr')) pointer = true;
    if (n.init) {
      walk(n.init as Node, (m) => {
        if (m.kind === 'unary-expression' && ['*', '&'].includes((m.operator as { value: string }).value)) pointer = true;
        return !pointer;
      });
    }
    if (pointer) names.add(code.slice(decl.start, decl.end));
    return true;
  });
  return names;
}

/** The kinds of declaration ('param', 'var', 'let', 'const') each local name of a function has. */
function localKinds(fn: FnElem, code: string): Map<string, Set<string>> {
  const kinds = new Map<string, Set<string>>();
  const add = (name: string, kind: string) => kinds.set(name, (kinds.get(name) ?? new Set()).add(kind));
  for (const p of fn.params) add(p.name.decl.ident.originalName, 'param');
  walk(fn.body as unknown as Node, (n) => {
    if (n.kind === 'var' || n.kind === 'let' || n.kind === 'const') {
      const decl = (n.name as Node | undefined)?.decl as Node | undefined;
      if (decl) add(code.slice(decl.start, decl.end), n.kind);
    }
    return true;
  });
  return kinds;
}

/** Names a function declares itself (parameters and local declarations), which shadow module constants. */
function localNames(fn: FnElem, code: string): Set<string> {
  return new Set(localKinds(fn, code).keys());
}

/**
 * Whether `n` steps one variable by exactly one: `v++`, `v += 1`, `v = v + 1` (`isVariable` tells
 * the variable's references, `constantOf` evaluates the step).
 */
function isUnitIncrement(n: Node, isVariable: (n: unknown) => boolean, constantOf: (e: unknown) => number | undefined): boolean {
  if (n.kind === 'increment') return isVariable(n.target);
  if (n.kind !== 'assign' || !isVariable(n.lhs)) return false;
  const op = (n.op as { value: string }).value;
  if (op === '+=') return constantOf(n.rhs) === 1;
  const rhs = n.rhs as Node;
  return op === '=' && rhs.kind === 'binary-expression' && (rhs.operator as { value: string }).value === '+' && isVariable(rhs.left) && constantOf(rhs.right) === 1;
}

const I32_MAX = 0x7fff_ffff;

/** Where a parameter goes at the end of `fn`'s list, and whether a comma must precede it. */
function paramListEnd(code: string, fn: FnElem): { offset: number; needsComma: boolean } | null {
  const lparen = skipTrivia(code, fn.name.end);
  if (code[lparen] !== '(') return null;
  const last = fn.params.at(-1);
  let at = skipTrivia(code, last ? last.end : lparen + 1);
  if (code[at] === ',') return { offset: skipTrivia(code, at + 1), needsComma: false };
  if (code[at] !== ')') return null;
  return { offset: at, needsComma: last !== undefined };
}

/** Visits every syntax node under `node` (statements and expressions), depth first; `visit` returning false skips a node's children. */
/**
 * WGSL source on one line, comments removed (WGSL has no string literals, so every `//` and `/*`
 * starts one; block comments nest): a copy spliced in this way keeps the program's line numbers.
 */
function onOneLine(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; ) {
    if (text.startsWith('//', i)) {
      while (i < text.length && !/[\n\r\v\f\u0085\u2028\u2029]/.test(text[i])) i++;
    } else if (text.startsWith('/*', i)) {
      let depth = 0;
      do {
        if (text.startsWith('/*', i)) { depth++; i += 2; } else if (text.startsWith('*/', i)) { depth--; i += 2; } else i++;
      } while (depth > 0 && i < text.length);
      out += ' ';
    } else {
      out += /[\n\r\v\f\u0085\u2028\u2029]/.test(text[i]) ? ' ' : text[i];
      i++;
    }
  }
  return out;
}

function walk(node: Node, visit: (node: Node) => boolean, seen = new Set<object>()): void {
  if (!node || seen.has(node)) return;
  seen.add(node);
  if (!visit(node)) return;
  for (const [key, value] of Object.entries(node)) {
    if (NOT_CODE.has(key) || value === null || typeof value !== 'object') continue;
    if (Array.isArray(value)) {
      for (const item of value) if (item && typeof item === 'object' && typeof (item as Node).start === 'number') walk(item as Node, visit, seen);
    } else if (typeof (value as Node).start === 'number') {
      walk(value as Node, visit, seen);
    }
  }
}
