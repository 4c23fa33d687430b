// Pathological WGSL modules: valid compute shaders shaped to make a compiler (Tint, then the
// driver's) work hard. Each writes its result to one storage buffer, so nothing is dead code.
// Used by bench/compile.ts (what costs Dawn and lavapipe time and memory) and by
// test/shaderLimits.test.ts (what gpunix refuses before Dawn sees it).

/** The storage binding and entry point every generated module shares. */
const HEADER = `@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n`;

function entry(body: string): string {
  return `@compute @workgroup_size(1) fn main(@builtin(global_invocation_id) gid: vec3u) {\n${body}\n}\n`;
}

/** `n` functions, f_i calls f_{i-1} `calls` times (2: inlining doubles at every level). */
export function chainedFunctions(n: number, calls: 1 | 2 = 1): string {
  const fns = [`fn f0(x: u32) -> u32 { return x * 3u + 1u; }`];
  for (let i = 1; i < n; i++) {
    const body = calls === 1 ? `f${i - 1}(x) + ${i}u` : `f${i - 1}(x) + f${i - 1}(x ^ ${i}u)`;
    fns.push(`fn f${i}(x: u32) -> u32 { return ${body}; }`);
  }
  return HEADER + fns.join('\n') + '\n' + entry(`  out[gid.x] = f${n - 1}(gid.x);`);
}

/** One entry point of `n` dependent statements (straight-line code, no calls). */
export function straightLine(n: number): string {
  const lines = ['  var x = gid.x;'];
  for (let i = 0; i < n; i++) lines.push(`  x = x * ${(i % 7) + 3}u + ${i}u;`);
  lines.push('  out[gid.x] = x;');
  return HEADER + entry(lines.join('\n'));
}

/** `n` nested `if` blocks around one store. */
export function nestedBlocks(n: number): string {
  let body = '  out[gid.x] = 1u;';
  for (let i = 0; i < n; i++) body = `if (gid.x != ${i + 1000000}u) {\n${body}\n}`;
  return HEADER + entry(`  ${body}`);
}

/** One expression nested `n` parentheses deep. */
export function nestedExpression(n: number): string {
  let expr = 'gid.x';
  for (let i = 0; i < n; i++) expr = `(${expr} + ${i}u)`;
  return HEADER + entry(`  out[gid.x] = ${expr};`);
}

/** A module-scope constant array of `n` elements, indexed at run time. */
export function constantArray(n: number): string {
  const values = Array.from({ length: n }, (_, i) => `${(i * 2654435761) % 4294967296}u`).join(',');
  return `${HEADER}const table = array<u32, ${n}>(${values});\n` + entry(`  out[gid.x] = table[gid.x % ${n}u];`);
}

/** A function-scope (private memory) array of `n` words, written and read at run time. */
export function privateArray(n: number): string {
  return HEADER + entry(`  var a: array<u32, ${n}>;\n  a[gid.x % ${n}u] = gid.x;\n  out[gid.x] = a[(gid.x * 7u) % ${n}u];`);
}

/** A module-scope `var<private>` array of `n` words, written and read at run time. */
export function modulePrivateArray(n: number): string {
  return `${HEADER}var<private> a: array<u32, ${n}>;\n` + entry(`  a[gid.x % ${n}u] = gid.x;\n  out[gid.x] = a[(gid.x * 7u) % ${n}u];`);
}

/** A `var<workgroup>` array of `n` words, written and read at run time. */
export function workgroupArray(n: number): string {
  return `${HEADER}var<workgroup> a: array<u32, ${n}>;\n` + entry(`  a[gid.x % ${n}u] = gid.x;\n  workgroupBarrier();\n  out[gid.x] = a[(gid.x * 7u) % ${n}u];`);
}

/** A function-scope array of `n` words that is only ever indexed by constants (scalarizable). */
export function constIndexedArray(n: number): string {
  return HEADER + entry(`  var a: array<u32, ${n}>;\n  a[3] = gid.x;\n  out[gid.x] = a[3] + a[${n - 1}];`);
}

/** `n` functions, each called once from the entry point (wide, shallow). */
export function manyFunctions(n: number): string {
  const fns: string[] = [];
  const sum: string[] = [];
  for (let i = 0; i < n; i++) {
    fns.push(`fn g${i}(x: u32) -> u32 { return x * ${i + 3}u + ${i}u; }`);
    sum.push(`  s = s + g${i}(gid.x);`);
  }
  return HEADER + fns.join('\n') + '\n' + entry(`  var s = 0u;\n${sum.join('\n')}\n  out[gid.x] = s;`);
}

/** A loop of `n` constant iterations (a candidate for full unrolling). */
export function constantLoop(n: number): string {
  return HEADER + entry(`  var x = gid.x;\n  for (var i = 0u; i < ${n}u; i++) { x = x * 3u + i; }\n  out[gid.x] = x;`);
}

/** Every generator, by name, for the bench's command line. */
export const GENERATORS: Record<string, (n: number) => string> = {
  chain1: (n) => chainedFunctions(n, 1),
  chain2: (n) => chainedFunctions(n, 2),
  straight: straightLine,
  nestedIf: nestedBlocks,
  nestedExpr: nestedExpression,
  constArray: constantArray,
  privateArray,
  modulePrivate: modulePrivateArray,
  constIndexed: constIndexedArray,
  workgroupArray,
  wide: manyFunctions,
  constLoop: constantLoop,
};
