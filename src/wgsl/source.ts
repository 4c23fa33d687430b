// A parsed WGSL module and the few text operations the rewriters need: the `wesl` parser for the
// syntax tree with source spans, a trivia scanner (whitespace and comments) for the punctuation
// the tree does not span, a splice list for minimal-diff edits, and a small integer evaluator for
// attribute arguments such as `@group(G)`. No regular expression touches WGSL text.

import { firstError, parseSrcModule, WeslStream, type AttributeElem, type ExpressionElem, type GlobalDeclarationElem, type Scope, type WeslAST } from 'wesl';

/**
 * One wesl token stream, kept for the life of the Node process. Every parse makes its own stream
 * and lexer (class instances) and token objects, all gone with the parse, and V8 holds an object
 * shape only while an object of it lives (src/vgpu/shapeKeepers.ts): at the full collection
 * between two processes (a daemon between jobs; every sample of bench/overhead) it freed them and
 * threw away the parser's optimized code (`--trace-deopt`: matchText, position, token, run, "weak
 * objects", in every sample). Each new process's first shader then ran the parser in the
 * interpreter while TurboFan compiled it again on a helper thread, beside the process's first
 * steps. A stream that has read a small module through, and peeked again, keeps those shapes.
 * Exported so that it lives (a module binding that no function reads is not kept).
 */
export const KEPT_PARSER_STREAM: WeslStream = (() => {
  const stream = new WeslStream('fn f(a: u32) -> u32 { var x = a + 1u; return x; }', false);
  while (stream.nextToken() !== null);
  stream.reset(0);
  stream.matchText('fn');
  stream.peek();
  stream.position();
  return stream;
})();

/** A module the wesl parser accepted, or why it did not. */
export type ParsedModule =
  | { ok: true; src: string; ast: WeslAST; decls: GlobalDeclarationElem[] }
  | { ok: false; src: string; message: string };

/** Parses plain WGSL; WESL-only syntax (imports, `@if`, `pkg::path` references) counts as an error. */
export function parseWgsl(src: string): ParsedModule {
  let ast: WeslAST;
  try {
    ast = parseSrcModule({ modulePath: 'package::main', debugFilePath: 'shader.wgsl', src }, { keepComments: false });
  } catch (e) {
    return { ok: false, src, message: `the WGSL parser failed: ${e instanceof Error ? e.message : String(e)}` };
  }
  const error = firstError(ast.diagnostics);
  if (error) return { ok: false, src, message: `${lineCol(src, error.start)}: ${error.message}` };
  if (ast.imports.length > 0) return { ok: false, src, message: 'the module uses WESL imports, which are not WGSL' };
  let wesl: string | undefined;
  walkScopes(ast.rootScope, (scope) => {
    if (scope.condAttribute) wesl ??= `the module uses WESL conditional compilation (${scope.condAttribute.kind})`;
    for (const item of scope.contents) {
      if (item.kind !== 'scope' && item.kind !== 'partial' && item.originalName.includes('::')) {
        wesl ??= `the module uses a WESL module path (${item.originalName}), which is not WGSL`;
      }
    }
  });
  if (wesl) return { ok: false, src, message: wesl };
  const decls = ast.moduleElem.decls.filter(isGlobalDecl);
  return { ok: true, src, ast, decls };
}

function isGlobalDecl(e: { kind: string }): e is GlobalDeclarationElem {
  return ['alias', 'const', 'fn', 'gvar', 'override', 'struct'].includes(e.kind);
}

/** `line:column` (both from 1) of a character offset, for messages. */
export function lineCol(src: string, offset: number): string {
  let line = 1;
  let col = 1;
  for (let i = 0; i < offset && i < src.length; i++) {
    if (src[i] === '\n') {
      line++;
      col = 1;
    } else col++;
  }
  return `${line}:${col}`;
}

/** Visits a scope and every scope nested in it. */
export function walkScopes(scope: Scope, visit: (scope: Scope) => void): void {
  visit(scope);
  for (const item of scope.contents) if (item.kind === 'scope' || item.kind === 'partial') walkScopes(item, visit);
}

/** Every identifier spelled anywhere in the module (declarations and references, any scope). */
export function identifierNames(ast: WeslAST): Set<string> {
  const names = new Set<string>();
  walkScopes(ast.rootScope, (scope) => {
    for (const item of scope.contents) if (item.kind === 'decl' || item.kind === 'ref') names.add(item.originalName);
  });
  return names;
}

/** The names referenced inside a scope and its nested scopes. */
export function referencedNames(scope: Scope | undefined): Set<string> {
  const names = new Set<string>();
  if (scope) {
    walkScopes(scope, (s) => {
      for (const item of s.contents) if (item.kind === 'ref') names.add(item.originalName);
    });
  }
  return names;
}

/** Hands out identifiers that collide with nothing in the module nor with each other. */
export class NameAllocator {
  private readonly taken: Set<string>;
  constructor(taken: Iterable<string>) {
    this.taken = new Set(taken);
  }
  /** `base`, or `base_1`, `base_2`, ... : the first one nobody uses. */
  fresh(base: string): string {
    let name = base;
    for (let i = 1; this.taken.has(name); i++) name = `${base}_${i}`;
    this.taken.add(name);
    return name;
  }
}

/**
 * The offset of the first character at or after `from` that is not whitespace or a comment
 * (WGSL comments: `// ...` to end of line, and nesting `/* ... *\/`).
 */
export function skipTrivia(src: string, from: number): number {
  let i = from;
  while (i < src.length) {
    const c = src[i];
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\v' || c === '\f' || c === '\u0085' || c === '\u200e' || c === '\u200f' || c === '\u2028' || c === '\u2029') {
      i++;
    } else if (c === '/' && src[i + 1] === '/') {
      while (i < src.length && src[i] !== '\n' && src[i] !== '\r') i++;
    } else if (c === '/' && src[i + 1] === '*') {
      let depth = 1;
      i += 2;
      while (i < src.length && depth > 0) {
        if (src[i] === '/' && src[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (src[i] === '*' && src[i + 1] === '/') {
          depth--;
          i += 2;
        } else i++;
      }
    } else break;
  }
  return i;
}

/** One replacement of the source range [start, end) by `text`. */
export interface Splice {
  start: number;
  end: number;
  text: string;
}

/** Applies non-overlapping splices to `src`; throws if two overlap (a rewriter bug). */
export function applySplices(src: string, splices: Splice[]): string {
  const sorted = [...splices].sort((a, b) => a.start - b.start || a.end - b.end);
  let out = '';
  let at = 0;
  for (const s of sorted) {
    if (s.start < at) throw new Error(`overlapping WGSL edits at ${s.start}`);
    out += src.slice(at, s.start) + s.text;
    at = s.end;
  }
  return out + src.slice(at);
}

/**
 * The value of an integer expression built from literals, module-scope `const`s, parentheses,
 * unary minus, `+ - * / % << >>` and `i32()`/`u32()` conversions; undefined for anything else
 * (a function call, a float). Overrides count only when `constants` is given (a pipeline's
 * constants, by name or @id): then an override is its constant, else its initializer.
 */
export function evalInteger(expr: ExpressionElem, decls: GlobalDeclarationElem[], constants?: Record<string, number>, depth = 0): number | undefined {
  if (depth > 32) return undefined;
  const again = (e: ExpressionElem) => evalInteger(e, decls, constants, depth + 1);
  switch (expr.kind) {
    case 'literal': {
      let text = expr.value;
      if (text.endsWith('i') || text.endsWith('u')) text = text.slice(0, -1);
      if (text === 'true' || text === 'false' || text.includes('.') || text.endsWith('f') || text.endsWith('h')) return undefined;
      const value = Number(text);
      return Number.isSafeInteger(value) ? value : undefined;
    }
    case 'ref': {
      const name = expr.ident.originalName;
      const decl = decls.find((d) => (d.kind === 'const' || (constants && d.kind === 'override')) && declName(d) === name);
      if (decl?.kind === 'override' && constants) {
        const id = attributeParams(decl, 'id')?.[0];
        const key = id ? again(id.expression) : undefined;
        const given = key !== undefined && String(key) in constants ? constants[String(key)] : constants[name];
        if (given !== undefined) return Number.isSafeInteger(Number(given)) ? Math.trunc(Number(given)) : undefined;
      }
      return (decl?.kind === 'const' || decl?.kind === 'override') && decl.init ? again(decl.init) : undefined;
    }
    case 'parenthesized-expression':
      return again(expr.expression);
    case 'unary-expression': {
      const v = again(expr.expression);
      return v !== undefined && expr.operator.value === '-' ? -v : undefined;
    }
    case 'binary-expression': {
      const l = again(expr.left);
      const r = again(expr.right);
      if (l === undefined || r === undefined) return undefined;
      switch (expr.operator.value) {
        case '+': return l + r;
        case '-': return l - r;
        case '*': return l * r;
        case '/': return r === 0 ? undefined : Math.trunc(l / r);
        case '%': return r === 0 ? undefined : l % r;
        case '<<': return l * 2 ** r;
        case '>>': return Math.floor(l / 2 ** r);
        default: return undefined;
      }
    }
    case 'call-expression': {
      const f = expr.function;
      const name = f.kind === 'ref' ? f.ident.originalName : f.kind === 'type' && !f.templateParams ? f.name.originalName : undefined;
      if ((name === 'u32' || name === 'i32') && expr.arguments.length === 1) return again(expr.arguments[0]);
      return undefined;
    }
    default:
      return undefined;
  }
}

/** The name a module-scope declaration declares ('' for directives and asserts). */
export function declName(d: GlobalDeclarationElem): string {
  switch (d.kind) {
    case 'fn':
    case 'struct':
    case 'alias':
      return d.name.ident.originalName;
    case 'const':
    case 'override':
    case 'gvar':
      return d.name.decl.ident.originalName;
    default:
      return '';
  }
}

/** The arguments of a declaration's `@name(...)` attribute; undefined when it has none. */
export function attributeParams(d: { attributes?: AttributeElem[] }, name: string): Array<{ expression: ExpressionElem }> | undefined {
  for (const a of d.attributes ?? []) if (a.attribute.kind === '@attribute' && a.attribute.name === name) return a.attribute.params ?? [];
  return undefined;
}

/** The bind group indices a module's variables use; the name of one whose index is not a constant the rewriter can evaluate. */
export function usedBindGroups(decls: GlobalDeclarationElem[]): Set<number> | string {
  const groups = new Set<number>();
  for (const d of decls) {
    if (d.kind !== 'gvar') continue;
    const attr = d.attributes?.find((a) => a.attribute.kind === '@attribute' && a.attribute.name === 'group');
    if (!attr || attr.attribute.kind !== '@attribute') continue;
    const expr = attr.attribute.params?.[0]?.expression;
    const g = expr ? evalInteger(expr, decls) : undefined;
    if (g === undefined) return declName(d);
    groups.add(g);
  }
  return groups;
}
