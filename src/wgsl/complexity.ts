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
//   privateArrayBytes bytes of fixed-size arrays held per invocation (private and function
//                     address spaces, parameters and results by value, constants, constructors)
//
// Two ways to count. Tokens (one cheap pass): a body's tokens stand for its syntax nodes and
// `name (` for a call, which over-estimates the syntax tree's counts (every node has a token of
// its own, every call the tree sees is such a pair) but not array sizes. The syntax tree (wesl's,
// source.ts; ten times the cost): exact. checkShader takes the tokens' word for a module that fits
// by them and spells no `array` outside storage, uniform and workgroup declarations, and parses
// the rest; a module wesl does not parse (malformed, or syntax newer than wesl) keeps the tokens'
// verdict, with conservative array sizes, so nothing unmeasured reaches Dawn.

import type { ExpressionElem, FnElem, GlobalDeclarationElem, Statement, TypeRefElem } from 'wesl';
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
      for (const param of decl.params) walker.declared(param.name.typeRef);
      walker.declared(decl.returnType);
      node.own += walker.count(decl.body, (callee) => {
        const i = names.get(callee);
        if (i !== undefined) node.calls.push(i);
      });
    } else {
      moduleCost += walker.countDecl(decl);
    }
  }
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
 * Counts syntax nodes, and adds up the bytes of fixed-size arrays a module keeps in the private
 * and function address spaces (declared, passed or returned by value, or constructed), which
 * compilers keep per invocation: dynamically indexed, they compile in time quadratic in their size.
 */
class TreeWalker {
  privateArrayBytes = 0;
  private readonly types = new Map<string, GlobalDeclarationElem>();
  private readonly sizes = new Map<string, { bytes: number; array: boolean }>();

  constructor(private readonly decls: GlobalDeclarationElem[]) {
    for (const d of decls) if (d.kind === 'struct' || d.kind === 'alias') this.types.set(d.name.ident.originalName, d);
  }

  /** A value of type `type` held per invocation (a local, a parameter, a result). */
  declared(type: TypeRefElem | undefined): void {
    if (type) this.addArrayBytes(this.sizeOf(type));
  }

  private addArrayBytes(size: { bytes: number; array: boolean }): void {
    if (size.array) this.privateArrayBytes = Math.min(this.privateArrayBytes + size.bytes, Number.MAX_SAFE_INTEGER);
  }

  /** Statements and expressions under `root` (itself included); `onCall` gets each called name. */
  count(root: Statement | ExpressionElem, onCall: (name: string) => void): number {
    let count = 0;
    const stack: (Node | undefined)[] = [root];
    const push = (...nodes: (Node | undefined)[]): void => {
      for (const n of nodes) if (n) stack.push(n);
    };
    // Initializers of declarations whose type is written out (counted once, by the declaration).
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
        case 'const':
          if (node.name.typeRef) {
            this.declared(node.name.typeRef);
            if (node.init) typed.add(node.init);
          }
          push(node.init);
          break;
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
          if (f.kind === 'ref') onCall(f.ident.originalName);
          if (!typed.has(node)) this.addArrayBytes(this.constructed(node));
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
        const nodes = 1 + (decl.init ? this.count(decl.init, none) : 0);
        // A written-out type counts instead of the initializer's constructors (not both).
        if (decl.name.typeRef) {
          this.privateArrayBytes = before;
          this.declared(decl.name.typeRef);
        }
        return nodes;
      }
      case 'struct':
        return 1 + decl.members.length;
      default:
        return 1;
    }
  }

  /** What a constructor call makes: an array or a struct holding one counts; anything else does not. */
  private constructed(call: ExpressionElem & { kind: 'call-expression' }): { bytes: number; array: boolean } {
    const f = call.function;
    if (f.kind === 'ref' && f.ident.originalName === 'array') {
      // `array(a, b, ...)`: the element type is inferred; the first element's constructor tells its size.
      const first = call.arguments[0];
      const element = first?.kind === 'call-expression' ? this.sizeOf(first.function).bytes : 0;
      return { bytes: call.arguments.length * Math.max(4, element), array: true };
    }
    return this.sizeOf(f);
  }

  /** Bytes of a type (an over-estimate: no padding, f16 aside every scalar 4 bytes); `array`: whether it holds a fixed-size array. */
  private sizeOf(type: ExpressionElem, depth = 0): { bytes: number; array: boolean } {
    const scalar = { bytes: 4, array: false };
    if (depth > 32) return scalar;
    const name = type.kind === 'type' ? type.name.originalName : type.kind === 'ref' ? type.ident.originalName : undefined;
    if (name === undefined) return scalar;
    const params = type.kind === 'type' ? type.templateParams ?? [] : [];
    const scalarBytes = (suffixOrType: string | ExpressionElem | undefined): number =>
      suffixOrType === 'h' || suffixOrType === 'f16' || (typeof suffixOrType === 'object' && this.sizeOf(suffixOrType, depth + 1).bytes === 2) ? 2 : 4;
    if (name === 'array') {
      if (params.length < 2) return { bytes: 0, array: false }; // runtime-sized: storage only
      const element = this.sizeOf(params[0], depth + 1);
      const count = evalInteger(params[1], this.decls);
      const n = count !== undefined && count > 0 ? count : UNKNOWN_ARRAY_COUNT;
      return { bytes: Math.min(n * element.bytes, Number.MAX_SAFE_INTEGER), array: true };
    }
    if (name === 'ptr') return { bytes: 0, array: false };
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
    if (!decl) return scalar;
    this.sizes.set(name, scalar); // a cycle (invalid WGSL) ends here
    let size = scalar;
    if (decl.kind === 'alias') size = this.sizeOf(decl.typeRef, depth + 1);
    else if (decl.kind === 'struct') {
      size = { bytes: 0, array: false };
      for (const m of decl.members) {
        const s = this.sizeOf(m.typeRef, depth + 1);
        size = { bytes: Math.min(size.bytes + s.bytes, Number.MAX_SAFE_INTEGER), array: size.array || s.array };
      }
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
  for (let t = 0; t < tokens.length; t++) {
    if (tokens[t] === 'var' && tokens[t + 1] === '<' && ['storage', 'uniform', 'workgroup'].includes(tokens[t + 2])) {
      while (t < tokens.length && tokens[t] !== ';') t++;
    } else if (tokens[t] === 'array') {
      arrays = true;
      if (tokens[t + 1] !== '<') continue;
      const a = arrayAt(t);
      total = Math.min(total + a.bytes, Number.MAX_SAFE_INTEGER);
      t = a.end;
    }
  }
  return { privateArrayBytes: total, arrays };
}
