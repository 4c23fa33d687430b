// What a WGSL module will cost to compile, measured before any of it reaches Dawn. A module's
// cost is not its size: compilers inline every call (lavapipe's NIR inlines into every function,
// bottom-up), so 2000 chained one-line functions (100 KB) make code quadratic in the chain
// (13 s and 2.5 GB on lavapipe), and a chain where each function calls the previous one twice
// doubles at every link; and an array kept per invocation and indexed at run time compiles in
// time quadratic in its size (a 245-byte module with a 64 KiB local array: 12 s). The measures
// (bench/compile.ts has the numbers behind each; docs/configuration.md the defaults):
//
//   bytes             the module's UTF-8 size, checked before anything else (even the parse)
//   nestingDepth      the deepest nesting of ( [ {, from the text alone, before the parse, so
//                     that no recursive parser (wesl's, Tint's) meets a pathological depth
//   functions         function declarations (the `fn` keywords, also from the text alone)
//   callDepth         the longest chain of calls, in functions (an entry point calling nothing: 1)
//   inlinedCost       module-scope declarations' syntax nodes + Σ over functions of inlined(f),
//                     inlined(f) = f's own statements and expressions + Σ over f's call sites of
//                     inlined(callee), computed once per function, bottom-up (memoized): the
//                     code an inliner that inlines into every function produces
//   privateArrayBytes bytes of fixed-size arrays held per invocation, summed over every value
//                     that holds one (private and function address spaces, constants, locals of
//                     written or inferred type, constructors by their elements' types, and
//                     parameters and results by value once per call site)
//
// Two ways to count. Tokens (one cheap pass): a body's tokens stand for its syntax nodes and
// `name (` for a call, which over-estimates the syntax tree's counts (every node has a token of
// its own, every call the tree sees is such a pair) but not array sizes. The syntax tree (wesl's,
// source.ts; ten times the cost): exact. checkShader takes the tokens' word for a module that fits
// by them and spells no `array` outside storage, uniform and workgroup declarations, and parses
// the rest; a module wesl does not parse (malformed, or syntax newer than wesl) keeps the tokens'
// verdict, with conservative array sizes, so nothing unmeasured reaches Dawn.

import type { ExpressionElem, FnElem, GlobalDeclarationElem, Statement } from 'wesl';
import { ErrorCodes, GpunixError } from '../errors.js';
import { DEFAULT_SHADER_LIMITS } from '../params.js';
import { evalInteger, parseWgsl } from './source.js';

/** The limits a module must stay within (kernel option `shaderLimits`). */
export interface ShaderLimits {
  /** UTF-8 bytes of the module's code. */
  maxModuleBytes: number;
  /** Function declarations in the module. */
  maxFunctions: number;
  /** The longest call chain, in functions. */
  maxCallDepth: number;
  /** Syntax nodes once every call is inlined, over all functions (see above). */
  maxInlinedCost: number;
  /** Nesting of parentheses, brackets and braces. */
  maxNestingDepth: number;
  /** Bytes of fixed-size arrays held per invocation (see above). */
  maxPrivateArrayBytes: number;
}

export type ShaderLimitName = keyof ShaderLimits;
/** In the order they are checked. */
export const SHADER_LIMIT_NAMES: readonly ShaderLimitName[] = ['maxModuleBytes', 'maxNestingDepth', 'maxFunctions', 'maxCallDepth', 'maxInlinedCost', 'maxPrivateArrayBytes'];

/** What a module measures; `tree` says whether from wesl's syntax tree or from its tokens. */
export interface ShaderCost {
  bytes: number;
  nestingDepth: number;
  functions: number;
  callDepth: number;
  inlinedCost: number;
  privateArrayBytes: number;
  tree: boolean;
}

/** A limit a module broke. */
export interface ShaderLimitExceeded {
  limit: ShaderLimitName;
  measured: number;
  max: number;
  /** What was measured, for the message ("module size", "inlined size"). */
  what: string;
}

const WHAT: Record<ShaderLimitName, { what: string; unit: string }> = {
  maxModuleBytes: { what: 'module size', unit: 'bytes' },
  maxNestingDepth: { what: 'nesting depth', unit: 'levels of ( [ {' },
  maxFunctions: { what: 'function count', unit: 'functions' },
  maxCallDepth: { what: 'call depth', unit: 'functions in the longest call chain' },
  maxInlinedCost: { what: 'inlined size', unit: 'syntax nodes once every call is inlined' },
  maxPrivateArrayBytes: { what: 'per-invocation array memory', unit: 'bytes of fixed-size arrays in the private and function address spaces' },
};

/** The kernel's `shaderLimits` option, checked: every field a positive integer; missing ones take the defaults. */
export function resolveShaderLimits(option: unknown): ShaderLimits {
  if (option === undefined) return { ...DEFAULT_SHADER_LIMITS };
  if (option === null || typeof option !== 'object' || Array.isArray(option)) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `shaderLimits must be an object with fields ${SHADER_LIMIT_NAMES.join(', ')}, got ${String(option)}`);
  }
  const given = option as Record<string, unknown>;
  const unknown = Object.keys(given).filter((k) => !(SHADER_LIMIT_NAMES as readonly string[]).includes(k));
  if (unknown.length > 0) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `shaderLimits: unknown field ${unknown.join(', ')} (known: ${SHADER_LIMIT_NAMES.join(', ')})`);
  }
  const limits: ShaderLimits = { ...DEFAULT_SHADER_LIMITS };
  for (const name of SHADER_LIMIT_NAMES) {
    const value = given[name];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `shaderLimits.${name} must be a positive integer, got ${typeof value === 'string' ? JSON.stringify(value) : String(value)}`);
    }
    limits[name] = value;
  }
  return limits;
}

/**
 * The first limit `code` breaks, or null when it fits. Cheap checks first, and each only once the
 * ones before it passed: the parse and the walks never see more than the limits allow.
 */
export function checkShader(code: string, limits: ShaderLimits): ShaderLimitExceeded | null {
  const over = (limit: ShaderLimitName, measured: number): ShaderLimitExceeded | null =>
    measured > limits[limit] ? { limit, measured, max: limits[limit], what: WHAT[limit].what } : null;
  const bytes = Buffer.byteLength(code, 'utf8');
  const tooBig = over('maxModuleBytes', bytes);
  if (tooBig) return tooBig;
  // From the text alone: the parse (the costliest step) only sees modules within these.
  const text = textMeasures(code);
  const early = over('maxNestingDepth', text.nestingDepth) ?? over('maxFunctions', text.functions);
  if (early) return early;
  const overAny = (cost: Measured): ShaderLimitExceeded | null =>
    over('maxFunctions', cost.functions) ??
    over('maxCallDepth', cost.callDepth) ??
    over('maxInlinedCost', cost.inlinedCost) ??
    over('maxPrivateArrayBytes', cost.privateArrayBytes);
  // The tokens over-estimate the tree's measures (every syntax node has a token of its own, and
  // every call the tree sees is a `name (` the tokens see), except array sizes: a module with no
  // per-invocation array that fits by its tokens fits, and is never parsed here (a tenth of the cost).
  const tokens = measureTokens(code);
  if (!tokens.arrays && overAny(tokens) === null) return null;
  return overAny(measureTree(code) ?? tokens);
}

/** Every measure of `code`, with no limit applied (benchmarks, and the message of a refusal). */
export function measureShader(code: string): ShaderCost {
  const { arrays: _arrays, ...cost } = measureTree(code) ?? measureTokens(code);
  return { bytes: Buffer.byteLength(code, 'utf8'), nestingDepth: textMeasures(code).nestingDepth, ...cost };
}

/** The one-line message a program gets, after the code: what, how much, the limit and the option. */
export function describeShaderLimit(label: string, e: ShaderLimitExceeded): string {
  const { what, unit } = WHAT[e.limit];
  return (
    `shader module${label ? ` "${label}"` : ''} is refused before compilation: its ${what} is ${e.measured} ${unit}, ` +
    `over the limit of ${e.max} (kernel option shaderLimits.${e.limit}). Split the work into smaller ` +
    `functions or modules, or ask the operator to raise the limit.`
  );
}

// ---- the syntax-tree measure --------------------------------------------------------------------

type Measured = Pick<ShaderCost, 'functions' | 'callDepth' | 'inlinedCost' | 'privateArrayBytes' | 'tree'> & {
  /** Whether the module spells `array` outside storage, uniform and workgroup declarations. */
  arrays: boolean;
};

/** The measures from wesl's syntax tree; null when wesl does not parse the module. */
function measureTree(code: string): Measured | null {
  const parsed = parseWgsl(code);
  if (!parsed.ok) return null;
  const fns = parsed.decls.filter((d): d is FnElem => d.kind === 'fn');
  const names = new Map<string, number>();
  fns.forEach((f, i) => names.set(f.name.ident.originalName, i));
  const walker = new TreeWalker(parsed.decls);
  let moduleCost = 0;
  const graph: FnNode[] = fns.map(() => ({ own: 1, calls: [] }));
  for (const decl of parsed.decls) {
    if (decl.kind === 'fn') {
      const node = graph[names.get(decl.name.ident.originalName)!];
      walker.enterFunction(decl);
      node.own += walker.count(decl.body, (callee) => {
        const i = names.get(callee);
        if (i !== undefined) node.calls.push(i);
      });
    } else {
      moduleCost += walker.countDecl(decl);
    }
  }
  walker.countCalls();
  return { functions: fns.length, tree: true, privateArrayBytes: walker.privateArrayBytes, arrays: walker.privateArrayBytes > 0, ...inline(graph, moduleCost) };
}

/** A function of the call graph: its own cost and the functions it calls, once per call site. */
interface FnNode {
  own: number;
  calls: number[];
}

/**
 * Inlined cost and call depth of every function, bottom-up, each computed once (an explicit
 * stack: a chain of thousands of functions must not overflow ours). A call back into a function
 * still being computed is recursion, which WGSL forbids and Dawn refuses: it adds nothing.
 */
function inline(graph: FnNode[], moduleCost: number): { callDepth: number; inlinedCost: number } {
  const cost = new Array<number>(graph.length).fill(-1);
  const depth = new Array<number>(graph.length).fill(0);
  const onStack = new Uint8Array(graph.length);
  const cursor = new Uint32Array(graph.length);
  let totalCost = 0;
  let worstDepth = 0;
  for (let root = 0; root < graph.length; root++) {
    if (cost[root] >= 0) continue;
    const stack: number[] = [root];
    onStack[root] = 1;
    while (stack.length > 0) {
      const f = stack[stack.length - 1];
      // Each call site is looked at once: the cursor resumes where the last descent left off.
      const calls = graph[f].calls;
      while (cursor[f] < calls.length && (cost[calls[cursor[f]]] >= 0 || onStack[calls[cursor[f]]])) cursor[f]++;
      const next = cursor[f] < calls.length ? calls[cursor[f]] : undefined;
      if (next !== undefined) {
        stack.push(next);
        onStack[next] = 1;
        continue;
      }
      let total = graph[f].own;
      let deepest = 0;
      for (const c of graph[f].calls) {
        if (cost[c] < 0) continue; // recursion
        total += cost[c];
        deepest = Math.max(deepest, depth[c]);
      }
      // Saturates instead of overflowing into imprecision: anything this large is refused anyway.
      cost[f] = Math.min(total, Number.MAX_SAFE_INTEGER);
      depth[f] = deepest + 1;
      totalCost = Math.min(totalCost + cost[f], Number.MAX_SAFE_INTEGER);
      worstDepth = Math.max(worstDepth, depth[f]);
      onStack[f] = 0;
      stack.pop();
    }
  }
  return { callDepth: worstDepth, inlinedCost: Math.min(moduleCost + totalCost, Number.MAX_SAFE_INTEGER) };
}

type Node = Statement | ExpressionElem;

/** Array elements assumed for a count the evaluator cannot work out: more than Tint accepts. */
const UNKNOWN_ARRAY_COUNT = 65536;

/**
 * A type, as far as the array measure needs it: its bytes (an over-estimate: no padding, f16 aside
 * every scalar 4 bytes), whether it holds a fixed-size array, and what indexing (`element`), a
 * member (`members`) or a dereference (`pointee`) of a value of it gives.
 */
interface Ty {
  bytes: number;
  array: boolean;
  element?: Ty;
  members?: Map<string, Ty>;
  pointee?: Ty;
}

const SCALAR: Ty = { bytes: 4, array: false };
/** A vector or scalar result (arithmetic, swizzles, builtins): never an array. */
const PLAIN: Ty = { bytes: 16, array: false };
const NOTHING: Ty = { bytes: 0, array: false };

function add(a: number, b: number): number {
  return Math.min(a + b, Number.MAX_SAFE_INTEGER);
}

/** The larger of two types for the same name (a shadowed name keeps the larger: conservative). */
function larger(a: Ty | undefined, b: Ty): Ty {
  return a && (a.bytes > b.bytes || (a.array && !b.array)) ? a : b;
}

/**
 * Counts syntax nodes, and adds up the bytes of fixed-size arrays a module keeps in the private
 * and function address spaces, which compilers keep per invocation: dynamically indexed, they
 * compile in time quadratic in their size. Every such value counts, each time it is made:
 * declared (`var`, `let`, `const`, `var<private>`, with a written type or one inferred from the
 * initializer: `var a = p;` copies p), constructed (`array(p, p)` holds two p), and passed or
 * returned by value (once per call site: an inliner copies them at each).
 */
class TreeWalker {
  privateArrayBytes = 0;
  private readonly types = new Map<string, GlobalDeclarationElem>();
  private readonly sizes = new Map<string, Ty>();
  /** Module-scope variables, constants and overrides, and their types (worked out on demand). */
  private readonly globals = new Map<string, GlobalDeclarationElem & { kind: 'gvar' | 'const' | 'override' }>();
  private readonly globalTypes = new Map<string, Ty>();
  /** Each function's array bytes passed and returned by value, and its call sites so far. */
  private readonly signatures = new Map<string, { bytes: number; result: Ty; calls: number }>();
  /** The current function's parameters and locals (a name declared twice keeps the larger type). */
  private scope = new Map<string, Ty>();

  constructor(private readonly decls: GlobalDeclarationElem[]) {
    for (const d of decls) {
      if (d.kind === 'struct' || d.kind === 'alias') this.types.set(d.name.ident.originalName, d);
      else if (d.kind === 'gvar' || d.kind === 'const' || d.kind === 'override') this.globals.set(d.name.decl.ident.originalName, d);
    }
    for (const d of decls) {
      if (d.kind !== 'fn') continue;
      let bytes = 0;
      for (const param of d.params) {
        const t = param.name.typeRef ? this.sizeOf(param.name.typeRef) : SCALAR;
        if (t.array) bytes = add(bytes, t.bytes);
      }
      const result = d.returnType ? this.sizeOf(d.returnType) : NOTHING;
      if (result.array) bytes = add(bytes, result.bytes);
      this.signatures.set(d.name.ident.originalName, { bytes, result, calls: 0 });
    }
  }

  /** Starts a function: a fresh scope holding its parameters. */
  enterFunction(fn: FnElem): void {
    this.scope = new Map();
    for (const param of fn.params) this.scope.set(param.name.decl.ident.originalName, param.name.typeRef ? this.sizeOf(param.name.typeRef) : SCALAR);
  }

  /** Adds what every call site passes and returns by value (after the walk has seen them all). */
  countCalls(): void {
    for (const sig of this.signatures.values()) if (sig.bytes > 0) this.privateArrayBytes = add(this.privateArrayBytes, sig.bytes * Math.max(1, sig.calls));
  }

  private addArrayBytes(size: Ty): void {
    if (size.array) this.privateArrayBytes = add(this.privateArrayBytes, size.bytes);
  }

  /** Statements and expressions under `root` (itself included); `onCall` gets each called name. */
  count(root: Statement | ExpressionElem, onCall: (name: string) => void): number {
    let count = 0;
    const stack: (Node | undefined)[] = [root];
    // In source order (the last pushed is taken first): a name is declared before it is used.
    const push = (...nodes: (Node | undefined)[]): void => {
      for (let i = nodes.length - 1; i >= 0; i--) if (nodes[i]) stack.push(nodes[i]);
    };
    // Initializers counted by their declaration (their constructor is not counted again).
    const typed = new Set<Node>();
    while (stack.length > 0) {
      const node = stack.pop();
      if (!node) continue;
      count++;
      switch (node.kind) {
        case 'block':
          push(...node.body);
          break;
        case 'if':
          push(node.condition, node.body, node.else);
          break;
        case 'for':
          push(node.init, node.condition, node.update, node.body);
          break;
        case 'while':
          push(node.condition, node.body);
          break;
        case 'loop':
          push(node.body, node.continuing);
          break;
        case 'continuing':
          push(node.body, node.breakIf);
          break;
        case 'switch':
          push(node.selector);
          for (const clause of node.clauses) push(...clause.selectors.filter((s): s is ExpressionElem => s !== 'default'), clause.body);
          break;
        case 'return':
          push(node.value);
          break;
        case 'break':
          push(node.condition);
          break;
        case 'assign':
          if (node.lhs.kind !== 'phony') push(node.lhs);
          push(node.rhs);
          break;
        case 'increment':
        case 'decrement':
          push(node.target);
          break;
        case 'call':
          push(node.call);
          break;
        case 'assert':
          push(node.expression);
          break;
        case 'var':
        case 'let':
        case 'const': {
          // The written type, or else the initializer's: `var a = p;` holds a copy of p.
          const type = node.name.typeRef ? this.sizeOf(node.name.typeRef) : node.init ? this.inferred(node.init, this.scope) : SCALAR;
          this.addArrayBytes(type);
          if (node.init) typed.add(node.init);
          const name = node.name.decl.ident.originalName;
          this.scope.set(name, larger(this.scope.get(name), type));
          push(node.init);
          break;
        }
        case 'parenthesized-expression':
          push(node.expression);
          break;
        case 'component-expression':
          push(node.base, node.access);
          break;
        case 'component-member-expression':
          push(node.base);
          break;
        case 'unary-expression':
          push(node.expression);
          break;
        case 'binary-expression':
          push(node.left, node.right);
          break;
        case 'call-expression': {
          const f = node.function;
          const sig = f.kind === 'ref' ? this.signatures.get(f.ident.originalName) : undefined;
          if (f.kind === 'ref') onCall(f.ident.originalName);
          if (sig) sig.calls++;
          else if (!typed.has(node)) this.addArrayBytes(this.constructed(node, this.scope));
          push(...node.arguments, ...(node.templateArgs ?? []));
          break;
        }
        default:
          // Literals, references, types, and statements with no parts (break, continue, discard, ;).
          break;
      }
    }
    return count;
  }

  /** Syntax nodes of a module-scope declaration (initializers: a large constant array counts in full). */
  countDecl(decl: GlobalDeclarationElem): number {
    const none = (): void => {};
    switch (decl.kind) {
      case 'gvar':
        // Only `var<private>` is per invocation; storage, uniform and workgroup memory are not.
        if (decl.template?.[0]?.name !== 'private') return 1 + (decl.init ? this.count(decl.init, none) : 0);
      // falls through: a private variable, like a constant, is per invocation
      case 'const':
      case 'override': {
        const before = this.privateArrayBytes;
        this.scope = new Map();
        const nodes = 1 + (decl.init ? this.count(decl.init, none) : 0);
        // Its type (written out, or else its initializer's) counts instead of the initializer's constructors (not both).
        this.privateArrayBytes = before;
        this.addArrayBytes(this.globalType(decl.name.decl.ident.originalName) ?? SCALAR);
        return nodes;
      }
      case 'struct':
        return 1 + decl.members.length;
      default:
        return 1;
    }
  }

  /** A module-scope name's type: written out, or its initializer's (worked out once; a cycle, invalid WGSL, ends as a scalar). */
  private globalType(name: string): Ty | undefined {
    const known = this.globalTypes.get(name);
    if (known) return known;
    const decl = this.globals.get(name);
    if (!decl) return undefined;
    this.globalTypes.set(name, SCALAR);
    const type = decl.name.typeRef ? this.sizeOf(decl.name.typeRef) : decl.init ? this.inferred(decl.init, new Map()) : SCALAR;
    this.globalTypes.set(name, type);
    return type;
  }

  /**
   * The type of an initializer, where it can be worked out; where not, the largest array any name
   * in it holds (conservative: a value made from an array is assumed to be that array).
   */
  private inferred(expr: ExpressionElem, scope: Map<string, Ty>): Ty {
    return this.typeOf(expr, scope, 0) ?? this.largestReferenced(expr, scope);
  }

  private lookup(name: string, scope: Map<string, Ty>): Ty | undefined {
    return scope.get(name) ?? this.globalType(name);
  }

  private typeOf(expr: ExpressionElem, scope: Map<string, Ty>, depth: number): Ty | undefined {
    if (depth > 64) return undefined;
    switch (expr.kind) {
      case 'literal':
        return SCALAR;
      case 'ref':
        // A name the module does not declare is a builtin value or type: never an array.
        return this.lookup(expr.ident.originalName, scope) ?? SCALAR;
      case 'parenthesized-expression':
        return this.typeOf(expr.expression, scope, depth + 1);
      case 'component-expression': {
        const base = this.typeOf(expr.base, scope, depth + 1);
        if (!base) return undefined;
        const value = base.pointee ?? base;
        return value.element ?? (value.array ? undefined : PLAIN);
      }
      case 'component-member-expression': {
        const base = this.typeOf(expr.base, scope, depth + 1);
        if (!base) return undefined;
        const value = base.pointee ?? base;
        if (value.members) return value.members.get(expr.access.name);
        return value.array ? undefined : PLAIN; // a swizzle
      }
      case 'unary-expression': {
        const operand = this.typeOf(expr.expression, scope, depth + 1);
        const op = expr.operator.value;
        if (op === '&') return operand ? { bytes: 0, array: false, pointee: operand } : undefined;
        if (op === '*') return operand?.pointee ?? operand;
        return PLAIN;
      }
      case 'binary-expression':
        return PLAIN;
      case 'call-expression': {
        const f = expr.function;
        const sig = f.kind === 'ref' ? this.signatures.get(f.ident.originalName) : undefined;
        return sig ? sig.result : this.constructed(expr, scope, depth);
      }
      default:
        return undefined;
    }
  }

  /** The largest array type of any name `expr` references (0 bytes when none). */
  private largestReferenced(expr: ExpressionElem, scope: Map<string, Ty>): Ty {
    let largest: Ty = NOTHING;
    const stack: unknown[] = [expr];
    while (stack.length > 0) {
      const node = stack.pop();
      if (!node || typeof node !== 'object') continue;
      if (Array.isArray(node)) {
        stack.push(...node);
        continue;
      }
      const e = node as ExpressionElem;
      if (e.kind === 'ref') {
        const t = this.lookup(e.ident.originalName, scope);
        const value = t?.pointee ?? t;
        if (value?.array && value.bytes > largest.bytes) largest = value;
        continue;
      }
      for (const key of ['base', 'access', 'expression', 'left', 'right', 'arguments', 'function', 'templateArgs'] as const) {
        if (key in e) stack.push((e as unknown as Record<string, unknown>)[key]);
      }
    }
    return largest;
  }

  /** What a constructor call makes: an array or a struct holding one counts; anything else does not. */
  private constructed(call: ExpressionElem & { kind: 'call-expression' }, scope: Map<string, Ty>, depth = 0): Ty {
    const f = call.function;
    if (f.kind === 'ref' && f.ident.originalName === 'array') {
      // `array(a, b, ...)`: the element type is inferred from the elements (the largest, to be safe).
      let element: Ty = SCALAR;
      for (const arg of call.arguments) element = larger(element, this.typeOf(arg, scope, depth + 1) ?? this.largestReferenced(arg, scope));
      return { bytes: Math.min(call.arguments.length * element.bytes, Number.MAX_SAFE_INTEGER), array: true, element };
    }
    return this.sizeOf(f);
  }

  /** The type `type` names (see Ty). */
  private sizeOf(type: ExpressionElem, depth = 0): Ty {
    if (depth > 32) return SCALAR;
    const name = type.kind === 'type' ? type.name.originalName : type.kind === 'ref' ? type.ident.originalName : undefined;
    if (name === undefined) return SCALAR;
    const params = type.kind === 'type' ? type.templateParams ?? [] : [];
    const scalarBytes = (suffixOrType: string | ExpressionElem | undefined): number =>
      suffixOrType === 'h' || suffixOrType === 'f16' || (typeof suffixOrType === 'object' && this.sizeOf(suffixOrType, depth + 1).bytes === 2) ? 2 : 4;
    if (name === 'array') {
      if (params.length < 2) return NOTHING; // runtime-sized: storage only
      const element = this.sizeOf(params[0], depth + 1);
      const count = evalInteger(params[1], this.decls);
      const n = count !== undefined && count > 0 ? count : UNKNOWN_ARRAY_COUNT;
      return { bytes: Math.min(n * element.bytes, Number.MAX_SAFE_INTEGER), array: true, element };
    }
    if (name === 'ptr') return { bytes: 0, array: false, pointee: params[1] ? this.sizeOf(params[1], depth + 1) : undefined };
    if (name === 'f16') return { bytes: 2, array: false };
    // vecN<T>, vecNf/i/u/h, matCxR<T>, matCxRf/h.
    if (name.startsWith('vec') && name.length >= 4) {
      const n = name.charCodeAt(3) - 48;
      if (n >= 2 && n <= 4) return { bytes: n * scalarBytes(name.length > 4 ? name[4] : params[0]), array: false };
    }
    if (name.startsWith('mat') && name.length >= 6 && name[4] === 'x') {
      const c = name.charCodeAt(3) - 48;
      const r = name.charCodeAt(5) - 48;
      if (c >= 2 && c <= 4 && r >= 2 && r <= 4) return { bytes: c * r * scalarBytes(name.length > 6 ? name[6] : params[0]), array: false };
    }
    const known = this.sizes.get(name);
    if (known) return known;
    const decl = this.types.get(name);
    if (!decl) return SCALAR;
    this.sizes.set(name, SCALAR); // a cycle (invalid WGSL) ends here
    let size = SCALAR;
    if (decl.kind === 'alias') size = this.sizeOf(decl.typeRef, depth + 1);
    else if (decl.kind === 'struct') {
      const members = new Map<string, Ty>();
      let bytes = 0;
      let array = false;
      for (const m of decl.members) {
        const s = this.sizeOf(m.typeRef, depth + 1);
        members.set(m.name.name, s);
        bytes = add(bytes, s.bytes);
        array ||= s.array;
      }
      size = { bytes, array, members };
    }
    this.sizes.set(name, size);
    return size;
  }
}

// ---- the text measures --------------------------------------------------------------------------

function isWordChar(c: number): boolean {
  // ASCII letters, digits, '_', and anything beyond ASCII (WGSL identifiers may be Unicode).
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c >= 128;
}

function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13) || c === 0x85 || c === 0x200e || c === 0x200f || c === 0x2028 || c === 0x2029;
}

/**
 * The deepest nesting of ( [ {, and the `fn` keywords (a keyword: never an identifier, and no
 * function nests in another, so this is the count of function declarations), outside comments:
 * one pass, nothing allocated.
 */
function textMeasures(code: string): { nestingDepth: number; functions: number } {
  let depth = 0;
  let deepest = 0;
  let functions = 0;
  for (let i = 0; i < code.length; i++) {
    const c = code.charCodeAt(i);
    if (c === 47 /* / */) {
      const end = skipComment(code, i);
      if (end > i) i = end - 1;
    } else if (c === 40 || c === 91 || c === 123) {
      if (++depth > deepest) deepest = depth;
    } else if (c === 41 || c === 93 || c === 125) {
      if (depth > 0) depth--;
    } else if (c === 102 /* f */ && code.charCodeAt(i + 1) === 110 /* n */ && !(i > 0 && isWordChar(code.charCodeAt(i - 1))) && !isWordChar(code.charCodeAt(i + 2))) {
      functions++;
    }
  }
  return { nestingDepth: deepest, functions };
}

/** The end of the comment starting at `i` (block comments nest), or `i` when none starts there. */
function skipComment(code: string, i: number): number {
  const next = code.charCodeAt(i + 1);
  if (next === 47) {
    while (i < code.length && code[i] !== '\n' && code[i] !== '\r') i++;
    return i;
  }
  if (next !== 42 /* * */) return i;
  let nested = 1;
  i += 2;
  while (i < code.length && nested > 0) {
    if (code[i] === '/' && code[i + 1] === '*') {
      nested++;
      i += 2;
    } else if (code[i] === '*' && code[i + 1] === '/') {
      nested--;
      i += 2;
    } else i++;
  }
  return i;
}

/** The module's tokens (words and single punctuation characters; never whitespace or comments). */
function tokenize(code: string): string[] {
  const tokens: string[] = [];
  let i = 0;
  const n = code.length;
  while (i < n) {
    const c = code.charCodeAt(i);
    if (isSpace(c)) {
      i++;
      continue;
    }
    if (c === 47) {
      const end = skipComment(code, i);
      if (end > i) {
        i = end;
        continue;
      }
    }
    const start = i;
    if (isWordChar(c)) {
      // A number such as 1.5f stays one token ('.' inside a word that starts with a digit).
      const numeric = c >= 48 && c <= 57;
      while (i < n && (isWordChar(code.charCodeAt(i)) || (numeric && code.charCodeAt(i) === 46))) i++;
    } else i++;
    tokens.push(code.slice(start, i));
  }
  return tokens;
}

/**
 * The measures from tokens alone, for a module wesl does not parse: `fn NAME ( ... ) ... { body }`
 * declares a function whose own cost is its body's tokens; `NAME (` inside a body, for a declared
 * function's NAME, is a call site; every token outside function bodies is module-scope cost.
 */
function measureTokens(code: string): Measured {
  const tokens = tokenize(code);
  const count = tokens.length;
  // Pass 1: declared functions and their bodies' token ranges.
  const bodies: { name: string; open: number; close: number }[] = [];
  let level = 0;
  for (let t = 0; t < count; t++) {
    const s = tokens[t];
    if (s === '{') level++;
    else if (s === '}') level = Math.max(0, level - 1);
    else if (s === 'fn' && level === 0 && t + 1 < count) {
      let open = t + 2;
      while (open < count && tokens[open] !== '{') open++;
      let close = open;
      for (let d = 0; close < count; close++) {
        const c = tokens[close];
        if (c === '{') d++;
        else if (c === '}' && --d === 0) break;
      }
      bodies.push({ name: tokens[t + 1], open, close: Math.min(close, count - 1) });
      t = close;
    }
  }
  const index = new Map<string, number>();
  bodies.forEach((b, i) => index.set(b.name, i));
  // Pass 2: each body's cost and call sites.
  let inBodies = 0;
  const graph: FnNode[] = bodies.map((b) => {
    const node: FnNode = { own: 1, calls: [] };
    for (let t = b.open; t <= b.close; t++) {
      node.own++;
      const callee = index.get(tokens[t]);
      if (callee !== undefined && t + 1 <= b.close && tokens[t + 1] === '(') node.calls.push(callee);
    }
    inBodies += b.close - b.open + 1;
    return node;
  });
  const arrays = tokenArrays(tokens);
  return { functions: bodies.length, tree: false, ...arrays, ...inline(graph, Math.max(0, count - inBodies)) };
}

/**
 * Bytes of every `array<T, N>` outside storage, uniform and workgroup declarations, from tokens:
 * N a literal or a `const NAME = literal;`, anything else UNKNOWN_ARRAY_COUNT; T a scalar (4),
 * a vector (16), a matrix (64) or an array (its own size).
 */
function tokenArrays(tokens: string[]): { privateArrayBytes: number; arrays: boolean } {
  const literal = (t: string | undefined): number | undefined => {
    if (t === undefined || !(t.charCodeAt(0) >= 48 && t.charCodeAt(0) <= 57)) return undefined;
    const v = Number(t.endsWith('u') || t.endsWith('i') ? t.slice(0, -1) : t);
    return Number.isSafeInteger(v) ? v : undefined;
  };
  const consts = new Map<string, number>();
  for (let t = 0; t + 4 < tokens.length; t++) {
    const v = literal(tokens[t + 3]);
    if (tokens[t] === 'const' && tokens[t + 2] === '=' && tokens[t + 4] === ';' && v !== undefined) consts.set(tokens[t + 1], v);
  }
  /** The size of the array type starting at `at` (`array` `<`), and the index of its closing `>`. */
  const arrayAt = (at: number): { bytes: number; end: number } => {
    let element = 4;
    let t = at + 2;
    const first = tokens[t] ?? '';
    if (first === 'array' && tokens[t + 1] === '<') {
      const inner = arrayAt(t);
      element = inner.bytes;
      t = inner.end + 1;
    } else if (first.startsWith('vec')) element = 16;
    else if (first.startsWith('mat')) element = 64;
    // Skip the rest of the element type, then read the count up to the closing '>'.
    for (let depth = 0; t < tokens.length && !(depth === 0 && (tokens[t] === ',' || tokens[t] === '>')); t++) {
      if (tokens[t] === '<') depth++;
      else if (tokens[t] === '>') depth--;
    }
    if (tokens[t] !== ',') return { bytes: 0, end: t }; // runtime-sized
    const countTokens: string[] = [];
    for (t++; t < tokens.length && tokens[t] !== '>'; t++) if (tokens[t] !== ',') countTokens.push(tokens[t]);
    const n = countTokens.length === 1 ? literal(countTokens[0]) ?? consts.get(countTokens[0]) : undefined;
    return { bytes: Math.min((n !== undefined && n > 0 ? n : UNKNOWN_ARRAY_COUNT) * element, Number.MAX_SAFE_INTEGER), end: t };
  };
  let total = 0;
  let arrays = false;
  // Names declared `NAME : array<...>` (anywhere, any address space), with their sizes.
  const named = new Map<string, number>();
  for (let t = 0; t + 3 < tokens.length; t++) {
    if (tokens[t + 1] === ':' && tokens[t + 2] === 'array' && tokens[t + 3] === '<') {
      const bytes = arrayAt(t + 2).bytes;
      if (bytes > 0) named.set(tokens[t], Math.max(bytes, named.get(tokens[t]) ?? 0));
    }
  }
  for (let t = 0; t < tokens.length; t++) {
    if (tokens[t] === 'var' && tokens[t + 1] === '<' && ['storage', 'uniform', 'workgroup'].includes(tokens[t + 2])) {
      // Not per invocation, but a fixed-size array in it can be copied into a local (`var a = tile;`):
      // such a module is measured from its syntax tree.
      for (; t < tokens.length && tokens[t] !== ';'; t++) if (tokens[t] === 'array' && tokens[t + 1] === '<' && arrayAt(t).bytes > 0) arrays = true;
    } else if (tokens[t] === 'array') {
      arrays = true;
      if (tokens[t + 1] !== '<') continue;
      const a = arrayAt(t);
      total = Math.min(total + a.bytes, Number.MAX_SAFE_INTEGER);
      t = a.end;
    } else if ((tokens[t] === 'var' || tokens[t] === 'let' || tokens[t] === 'const') && tokens[t + 2] === '=') {
      // A declaration whose type is inferred holds what its initializer makes: every array-typed
      // name in it counts in full, unless indexed (`var a = p;`, `array(p, p)`; not `p[i]`).
      for (t += 3; t < tokens.length && tokens[t] !== ';'; t++) {
        const bytes = tokens[t] === 'array' && tokens[t + 1] === '<' ? arrayAt(t) : { bytes: named.get(tokens[t]), end: t };
        if (tokens[t] === 'array') arrays = true;
        if (bytes.bytes !== undefined && tokens[t + 1] !== '[') total = Math.min(total + bytes.bytes, Number.MAX_SAFE_INTEGER);
        t = bytes.end;
      }
    }
  }
  return { privateArrayBytes: total, arrays };
}
