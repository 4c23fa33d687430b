// The atomizer: rewrites one compute entry point so that a dispatch of grid G = (Gx, Gy, Gz)
// workgroups can run as several smaller dispatches ("atoms"), each covering a box
// [offset, offset + size) of G, which together compute exactly what the one dispatch computes.
// Legal because WebGPU promises no concurrency or order between the workgroups of a dispatch.
//
// API
//   atomize(code, entryPoint, { maxImmediateSize, maxBindGroups }) -> AtomizedEntry
//   atomParams(offset, grid) -> Uint32Array   (the 32-byte atom record)
//
// Running an atom: dispatchWorkgroups(size) with the record of its offset and the whole grid:
//   'immediate': pass.setImmediates(recordOffset, atomParams(offset, grid)) before the dispatch.
//                The entry reads `var<immediate>`; its bind groups are exactly the original's. An
//                explicit pipeline layout needs `immediateSize >= AtomizedEntry.immediateSize`; Dawn
//                derives it for 'auto'. immediateSize 0 means the entry uses no grid-dependent
//                builtin: any split already computes the same, the code is unchanged and needs no
//                record. When the entry uses the program's own immediate variable, the two are
//                composed into one immediate struct: the program's data in [0, recordOffset) (set
//                as the program sets it), the record after it (see composeImmediates).
//   'uniform':   the record is a uniform buffer (minBindingSize 32) at `uniformBinding`, a bind
//                group index no resource of the module uses; the caller adds that group to the
//                layout (one record per atom: gpunix writes one buffer before each atom's submit).
//                Chosen when the program's immediates leave the record no room.
//   'whole':     the entry cannot be atomized (see `reason` and `cause`); run the original code
//                (returned unchanged) as one dispatch. Malformed WGSL lands here too, on purpose:
//                the program must get Dawn's own compilation error from the original code, and a
//                module this parser rejects but Dawn accepts still runs, just unsplit.
//
// The rewrite (splices on the wesl syntax tree's spans; the rest of the text is untouched):
//   - Entry parameters whose builtin depends on the grid (workgroup_id, num_workgroups,
//     global_invocation_id, workgroup_index, global_invocation_index) are dropped or renamed,
//     and a prologue at the top of the body re-declares each original name with its virtual value:
//       workgroup_id            = raw workgroup_id + atom.offset
//       num_workgroups          = atom.grid
//       global_invocation_id    = workgroup_id * workgroup_size + local_invocation_id
//       workgroup_index         = wid.x + wid.y * G.x + wid.z * G.x * G.y
//       global_invocation_index = gid.x + gid.y * E.x + gid.z * E.x * E.y,  E = G * workgroup_size
//     (the WGSL definitions, which Dawn's linear_indexing builtins follow). A struct parameter
//     holding such a builtin is renamed and rebuilt in the prologue with the virtual members.
//     local_invocation_*, subgroup_* and the other builtins pass through untouched.
//   - Raw `workgroup_id` / `local_invocation_id` are taken from the entry's own inputs when it
//     declares them, else added as parameters.
//   - Appended at module scope: the record struct, its variable (`var<immediate>`, or a
//     `var<uniform>` in the reserved group) and, when needed, a function returning the workgroup
//     size built from the attribute's own expression text (overrides stay overrides).
//   - Every introduced name starts with `gpunix_`/`GpunixAtom` and is suffixed until it collides
//     with no identifier of the module. Other entry points and functions are not touched.

import type { FnElem, FnParamElem, GlobalDeclarationElem, StructElem, StructMemberElem, TypeRefElem, WeslAST } from 'wesl';
import { ErrorCodes, GpunixError } from '../errors.js';
import { applySplices, declName, evalInteger, identifierNames, NameAllocator, parseWgsl, referencedNames, skipTrivia, usedBindGroups, walkScopes, type Splice } from './source.js';

/** How an atomized entry point receives its atom record. */
export type AtomMode = 'immediate' | 'uniform' | 'whole';

/** Why an entry point runs whole. */
export type WholeCause =
  | 'parse-error' // the parser rejected the module (or it is WESL, not WGSL)
  | 'no-entry-point' // no such compute entry point, or none named and several exist
  | 'unsupported' // a construct the rewriter does not handle (see reason)
  | 'no-free-bind-group'; // uniform fallback needed, but every group index below maxBindGroups is taken

export interface AtomizedEntry {
  mode: AtomMode;
  /** The rewritten module; the input unchanged when 'whole' or when nothing needed virtualizing. */
  code: string;
  /** The entry point to create the pipeline with (same name as the original). */
  entryPoint: string;
  /** Why 'whole', why 'uniform', or why the code is unchanged. */
  reason?: string;
  /** Set when 'whole'. */
  cause?: WholeCause;
  /** Bytes of immediate data the rewritten entry adds ('immediate' mode; 0 = no record needed). */
  immediateSize?: number;
  /**
   * Where the record goes in the immediates ('immediate' mode): 0, or, when the entry uses an
   * immediate variable of the program's own, the offset after the room kept for the program's
   * data (which stays at the offsets the program sets it at).
   */
  recordOffset?: number;
  /** Where the record goes in 'uniform' mode. */
  uniformBinding?: { group: number; binding: number };
  /** The grid-dependent builtins the rewrite virtualized, e.g. ['workgroup_id']. */
  virtualized?: string[];
}

export interface AtomizeOptions {
  /** The device's maxImmediateSize; a record that does not fit forces 'uniform'. */
  maxImmediateSize: number;
  /** The device's maxBindGroups; the 'uniform' record needs a free index below it. */
  maxBindGroups: number;
}

/** Bytes of one atom record: `offset: vec3u` at 0, `grid: vec3u` at 16 (WGSL layout rules). */
export const ATOM_RECORD_SIZE = 32;

/** Builtins whose value depends on where a workgroup sits in the grid. */
const GRID_BUILTINS = ['workgroup_id', 'num_workgroups', 'global_invocation_id', 'workgroup_index', 'global_invocation_index'] as const;
type GridBuiltin = (typeof GRID_BUILTINS)[number];

/** Predeclared names the generated code spells; a module that redeclares one is left whole. */
const PREDECLARED_USED = ['vec3u', 'u32'];

/** The bytes to pass (setImmediates(0, data) or the uniform) for an atom at `offset` of the grid `grid`. */
export function atomParams(offset: [number, number, number], grid: [number, number, number]): Uint32Array<ArrayBuffer> {
  // Made for every atom: checked and filled without arrays of its own.
  for (let i = 0; i < 3; i++) {
    checkAtomWord('offset', i, offset[i]);
    checkAtomWord('grid', i, grid[i]);
    if (offset[i] >= grid[i]) {
      throw new GpunixError(ErrorCodes.BAD_OPTION, `atom offset [${offset.join(', ')}] lies outside the grid [${grid.join(', ')}]`);
    }
  }
  const params = new Uint32Array(ATOM_RECORD_SIZE / 4);
  params[0] = offset[0];
  params[1] = offset[1];
  params[2] = offset[2];
  params[4] = grid[0];
  params[5] = grid[1];
  params[6] = grid[2];
  return params;
}

/** One word of an atom record: an integer in [0, 2^32), else GPUNIX_E_BAD_OPTION naming it. */
function checkAtomWord(what: string, index: number, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new GpunixError(ErrorCodes.BAD_OPTION, `atom ${what}[${index}] must be an integer in [0, 2^32), got ${value}`);
  }
}

/** One grid-dependent builtin the entry declares, and where. */
interface GridInput {
  builtin: GridBuiltin;
  param: FnParamElem;
  member?: StructMemberElem; // set when the builtin is a member of the parameter's struct
}

/** Rewrites `entryPoint` (or the module's only compute entry point) for atom dispatch. */
export function atomize(code: string, entryPoint: string | undefined, options: AtomizeOptions): AtomizedEntry {
  const whole = (cause: WholeCause, reason: string, name = entryPoint ?? ''): AtomizedEntry => ({
    mode: 'whole',
    code,
    entryPoint: name,
    reason,
    cause,
  });

  const parsed = parseWgsl(code);
  if (!parsed.ok) return whole('parse-error', parsed.message);
  const { ast, decls } = parsed;

  // Find the entry point the way WebGPU does: by name, or the only compute entry point.
  const computeFns = decls.filter((d): d is FnElem => d.kind === 'fn' && hasAttr(d, 'compute'));
  let entry: FnElem | undefined;
  if (entryPoint === undefined) {
    if (computeFns.length !== 1) return whole('no-entry-point', `no entry point named and the module has ${computeFns.length} compute entry points`);
    entry = computeFns[0];
  } else {
    entry = computeFns.find((f) => fnName(f) === entryPoint);
    if (!entry) return whole('no-entry-point', `the module has no compute entry point named '${entryPoint}'`);
  }
  const name = fnName(entry);
  const unsupported = (reason: string) => whole('unsupported', reason, name);

  const wgSizeAttr = entry.attributes?.find((a) => a.attribute.kind === '@attribute' && a.attribute.name === 'workgroup_size');
  const wgSizeParams = wgSizeAttr?.attribute.kind === '@attribute' ? wgSizeAttr.attribute.params ?? [] : [];
  if (wgSizeParams.length < 1 || wgSizeParams.length > 3) return unsupported(`entry point '${name}' has no valid @workgroup_size`);
  if (entry.returnType) return unsupported(`compute entry point '${name}' declares a return type`);

  // The grid-dependent builtins the entry receives, as parameters or struct members.
  const gridInputs: GridInput[] = [];
  let rawWid: string | undefined; // expression for the raw workgroup_id, when the entry declares it
  let rawLid: string | undefined; // expression for local_invocation_id, when the entry declares it
  const structParams = new Map<FnParamElem, StructElem>();
  for (const param of entry.params) {
    const builtin = builtinOf(param);
    if (builtin) {
      if (isGridBuiltin(builtin)) gridInputs.push({ builtin, param });
      continue;
    }
    const struct = resolveStruct(param.name.typeRef, decls);
    if (!struct) return unsupported(`parameter '${paramName(param)}' of '${name}' is neither a builtin nor a struct of builtins`);
    structParams.set(param, struct);
    for (const member of struct.members) {
      const b = builtinOf(member);
      if (b && isGridBuiltin(b)) gridInputs.push({ builtin: b, param, member });
    }
  }

  const virtualized = [...new Set(gridInputs.map((g) => g.builtin))];
  if (virtualized.length === 0) {
    return {
      mode: 'immediate',
      code,
      entryPoint: name,
      immediateSize: 0,
      virtualized,
      reason: 'the entry point uses no grid-dependent builtin: any split computes the same, so the code is unchanged and atoms need no record',
    };
  }

  const taken = identifierNames(ast);
  const shadowed = PREDECLARED_USED.filter((n) => decls.some((d) => declName(d) === n) || entry!.params.some((p) => paramName(p) === n));
  if (shadowed.length > 0) return unsupported(`the module redeclares the predeclared name '${shadowed[0]}' that the rewrite needs`);
  const names = new NameAllocator([...taken, ...PREDECLARED_USED]);

  // Immediate or uniform? One immediate variable per entry point (WGSL), and the record must fit.
  const immediateVars = decls.filter((d) => d.kind === 'gvar' && d.template?.[0]?.name === 'immediate').map(declName);
  const used = staticallyReferenced(entry, decls);
  const userImmediate = immediateVars.find((v) => used.has(v));
  let mode: 'immediate' | 'uniform' = 'immediate';
  let reason: string | undefined;
  let uniformBinding: { group: number; binding: number } | undefined;
  // The program's own immediate variable, composed with the record into one immediate struct:
  // its data first (as the program sets it, from offset 0), the record at `recordOffset`.
  const composed = userImmediate !== undefined ? composeImmediates(ast, decls, userImmediate, options.maxImmediateSize) : null;
  if (composed) reason = `the entry point's immediate variable '${userImmediate}' is composed with the atom record (program data in bytes [0, ${composed.recordOffset}), the record after)`;
  else if (userImmediate !== undefined || ATOM_RECORD_SIZE > options.maxImmediateSize) {
    mode = 'uniform';
    reason =
      userImmediate !== undefined
        ? `the entry point already uses the immediate variable '${userImmediate}' (WGSL allows one per entry point)`
        : `the ${ATOM_RECORD_SIZE}-byte atom record exceeds maxImmediateSize (${options.maxImmediateSize})`;
    const groups = usedBindGroups(decls);
    if (typeof groups === 'string') return unsupported(`${reason}, and the bind group of '${groups}' is not a constant the rewriter can evaluate`);
    const group = pickFreeGroup(groups, options.maxBindGroups);
    if (group === undefined) {
      return whole('no-free-bind-group', `${reason}, and every bind group index below maxBindGroups (${options.maxBindGroups}) is used by the module`, name);
    }
    uniformBinding = { group, binding: 0 };
  }
  const recordOffset = composed?.recordOffset ?? 0;

  // Names the rewrite introduces.
  const atomType = names.fresh('GpunixAtom');
  const immediatesType = composed ? names.fresh('GpunixAtomImmediates') : '';
  const immediatesVar = composed ? names.fresh('gpunix_immediates') : '';
  // How the record is spelled in the prologue: its own variable, or the composed struct's member.
  const atomVar = composed ? `${immediatesVar}.atom` : names.fresh('gpunix_atom');
  const has = (b: GridBuiltin) => virtualized.includes(b);
  const needGid = has('global_invocation_id') || has('global_invocation_index');
  const needWid = needGid || has('workgroup_id') || has('workgroup_index');
  const wgSizeFn = needGid ? names.fresh('gpunix_workgroup_size') : undefined;

  // Raw inputs the entry already declares (a param keeps its name unless it is virtualized).
  const renamedParam = new Map<FnParamElem, string>();
  for (const param of entry.params) {
    const struct = structParams.get(param);
    if (struct) {
      const virtualMember = gridInputs.some((g) => g.param === param);
      if (virtualMember) renamedParam.set(param, names.fresh(`gpunix_in_${paramName(param)}`));
      const base = renamedParam.get(param) ?? paramName(param);
      for (const m of struct.members) {
        if (builtinOf(m) === 'workgroup_id') rawWid = `${base}.${m.name.name}`;
        if (builtinOf(m) === 'local_invocation_id') rawLid = `${base}.${m.name.name}`;
      }
    } else {
      const b = builtinOf(param);
      if (b === 'workgroup_id') {
        const raw = names.fresh('gpunix_raw_workgroup_id');
        renamedParam.set(param, raw);
        rawWid = raw;
      }
      if (b === 'local_invocation_id') rawLid = paramName(param);
    }
  }
  const addedParams: string[] = [];
  if (needWid && rawWid === undefined) {
    rawWid = names.fresh('gpunix_raw_workgroup_id');
    addedParams.push(`@builtin(workgroup_id) ${rawWid}: vec3u`);
  }
  if (needGid && rawLid === undefined) {
    rawLid = names.fresh('gpunix_raw_local_invocation_id');
    addedParams.push(`@builtin(local_invocation_id) ${rawLid}: vec3u`);
  }

  // The prologue: virtual values into fresh names first, then the program's names, so no
  // program name declared here can shadow anything a later prologue line reads.
  const lines: string[] = [];
  const virtual = new Map<GridBuiltin, string>();
  if (needWid) {
    const wid = names.fresh('gpunix_workgroup_id');
    lines.push(`let ${wid} = ${rawWid} + ${atomVar}.offset;`);
    virtual.set('workgroup_id', wid);
  }
  virtual.set('num_workgroups', `${atomVar}.grid`);
  if (needGid) {
    const gid = names.fresh('gpunix_global_invocation_id');
    lines.push(`let ${gid} = ${virtual.get('workgroup_id')} * ${wgSizeFn}() + ${rawLid};`);
    virtual.set('global_invocation_id', gid);
  }
  if (has('workgroup_index')) {
    const wid = virtual.get('workgroup_id')!;
    const wi = names.fresh('gpunix_workgroup_index');
    lines.push(`let ${wi} = ${wid}.x + ${wid}.y * ${atomVar}.grid.x + ${wid}.z * ${atomVar}.grid.x * ${atomVar}.grid.y;`);
    virtual.set('workgroup_index', wi);
  }
  if (has('global_invocation_index')) {
    const gid = virtual.get('global_invocation_id')!;
    const ext = names.fresh('gpunix_grid_extent');
    const gi = names.fresh('gpunix_global_invocation_index');
    lines.push(`let ${ext} = ${atomVar}.grid * ${wgSizeFn}();`);
    lines.push(`let ${gi} = ${gid}.x + ${gid}.y * ${ext}.x + ${gid}.z * ${ext}.x * ${ext}.y;`);
    virtual.set('global_invocation_index', gi);
  }
  const userLets: string[] = [];
  const keptParams: string[] = [];
  for (const param of entry.params) {
    const text = code.slice(param.start, param.end);
    const struct = structParams.get(param);
    const renamed = renamedParam.get(param);
    if (struct && renamed) {
      const args = struct.members.map((m) => {
        const b = builtinOf(m);
        return b && isGridBuiltin(b) ? virtual.get(b)! : `${renamed}.${m.name.name}`;
      });
      const tmp = names.fresh(`gpunix_value_${paramName(param)}`);
      lines.push(`let ${tmp} = ${code.slice(param.name.typeRef!.start, param.name.typeRef!.end)}(${args.join(', ')});`);
      userLets.push(`let ${paramName(param)} = ${tmp};`);
      keptParams.push(renameParam(code, param, renamed));
      continue;
    }
    const b = builtinOf(param);
    if (b && isGridBuiltin(b)) {
      userLets.push(`let ${paramName(param)} = ${virtual.get(b)};`);
      if (renamed) keptParams.push(renameParam(code, param, renamed)); // the raw workgroup_id source
      continue; // other grid builtins leave the interface: the prologue computes them
    }
    keptParams.push(text);
  }
  lines.push(...userLets);

  // Splices: parameter list, prologue, module-scope additions.
  const lparen = skipTrivia(code, entry.name.end);
  const last = entry.params.at(-1);
  let rparen = skipTrivia(code, last ? last.end : lparen + 1);
  if (code[rparen] === ',') rparen = skipTrivia(code, rparen + 1);
  if (code[lparen] !== '(' || code[rparen] !== ')') return unsupported(`could not locate the parameter list of '${name}'`);
  const wgSizeText = [0, 1, 2].map((i) => (wgSizeParams[i] ? `u32(${code.slice(skipTrivia(code, wgSizeParams[i].start), wgSizeParams[i].end).trimEnd()})` : '1u'));
  const varDecl = composed
    ? `struct ${immediatesType} { @size(${recordOffset}) program: ${composed.typeText}, atom: ${atomType} }\nvar<immediate> ${immediatesVar}: ${immediatesType};`
    : mode === 'immediate'
      ? `var<immediate> ${atomVar}: ${atomType};`
      : `@group(${uniformBinding!.group}) @binding(${uniformBinding!.binding}) var<uniform> ${atomVar}: ${atomType};`;
  const appended = [
    '',
    `// gpunix atom record for entry point '${name}': the atom's offset and the whole grid, in workgroups.`,
    `struct ${atomType} { offset: vec3u, grid: vec3u }`,
    varDecl,
    ...(wgSizeFn ? [`fn ${wgSizeFn}() -> vec3u { return vec3u(${wgSizeText.join(', ')}); }`] : []),
    '',
  ];
  const splices: Splice[] = [
    { start: lparen, end: rparen + 1, text: `(${[...keptParams, ...addedParams].join(', ')})` },
    { start: entry.body.start + 1, end: entry.body.start + 1, text: `\n  // gpunix atom prologue: virtual grid builtins\n  ${lines.join('\n  ')}\n` },
    { start: code.length, end: code.length, text: (code.endsWith('\n') ? '' : '\n') + appended.join('\n') },
    // Every use of the program's immediate variable reads the composed struct's first member
    // (its own declaration stays, unused: one immediate variable per entry point).
    ...(composed ? composed.refs.map((r) => ({ start: r.start, end: r.end, text: `${immediatesVar}.program` })) : []),
  ];
  const rewritten = applySplices(code, splices);

  // Defence in depth: the result must parse; if it does not, the rewriter has a bug, and the
  // program still runs (whole) instead of failing.
  const check = parseWgsl(rewritten);
  if (!check.ok) return unsupported(`internal error: the rewritten module does not parse (${check.message})`);

  return {
    mode,
    code: rewritten,
    entryPoint: name,
    ...(reason ? { reason } : {}),
    ...(mode === 'immediate' ? { immediateSize: recordOffset + ATOM_RECORD_SIZE, recordOffset } : { uniformBinding }),
    virtualized,
  };
}

function hasAttr(fn: FnElem, attrName: string): boolean {
  return fn.attributes?.some((a) => a.attribute.kind === '@attribute' && a.attribute.name === attrName) ?? false;
}

function fnName(fn: FnElem): string {
  return fn.name.ident.originalName;
}

function paramName(p: FnParamElem): string {
  return p.name.decl.ident.originalName;
}


function builtinOf(e: FnParamElem | StructMemberElem): string | undefined {
  for (const a of e.attributes ?? []) if (a.attribute.kind === '@builtin') return a.attribute.param.name;
  return undefined;
}

function isGridBuiltin(b: string): b is GridBuiltin {
  return (GRID_BUILTINS as readonly string[]).includes(b);
}

/** The struct a parameter's type names, through aliases. */
function resolveStruct(typeRef: TypeRefElem | undefined, decls: GlobalDeclarationElem[]): StructElem | undefined {
  let ref = typeRef;
  for (let hops = 0; ref && !ref.templateParams && hops < 16; hops++) {
    const target = ref.name.originalName;
    const decl = decls.find((d) => (d.kind === 'struct' || d.kind === 'alias') && declName(d) === target);
    if (decl?.kind === 'struct') return decl;
    if (decl?.kind !== 'alias') return undefined;
    ref = decl.typeRef;
  }
  return undefined;
}

/** Module-scope names the entry may reach: its references and, transitively, its callees'. */
function staticallyReferenced(entry: FnElem, decls: GlobalDeclarationElem[]): Set<string> {
  const fns = new Map(decls.filter((d): d is FnElem => d.kind === 'fn').map((f) => [fnName(f), f]));
  const seen = new Set<string>();
  const out = new Set<string>();
  const visit = (fn: FnElem) => {
    if (seen.has(fnName(fn))) return;
    seen.add(fnName(fn));
    for (const n of referencedNames(fn.name.ident.dependentScope)) {
      out.add(n);
      const callee = fns.get(n);
      if (callee) visit(callee);
    }
  };
  visit(entry);
  return out;
}

/** Prefers the index just past the highest one used (no gaps to fill), else the lowest free one. */
function pickFreeGroup(used: Set<number>, maxBindGroups: number): number | undefined {
  const next = used.size === 0 ? 0 : Math.max(...used) + 1;
  if (next < maxBindGroups) return next;
  for (let g = 0; g < maxBindGroups; g++) if (!used.has(g)) return g;
  return undefined;
}

/** A parameter's source text with its name replaced. */
function renameParam(code: string, param: FnParamElem, newName: string): string {
  const decl = param.name.decl;
  return code.slice(param.start, decl.start) + newName + code.slice(decl.end, param.end);
}

/**
 * How the program's immediate variable `name` shares the immediates with the atom record: the
 * program keeps bytes [0, recordOffset) (the most that leaves room for the record, a multiple of
 * 16 as the record's alignment asks), the record follows. Null when there is no room, or when a
 * local declaration shares the name (its uses could not be told apart without binding). A program
 * type larger than recordOffset makes the twin fail to compile (`@size` below the type's size):
 * the pipeline then runs whole.
 */
function composeImmediates(
  ast: WeslAST,
  decls: GlobalDeclarationElem[],
  name: string,
  maxImmediateSize: number,
): { recordOffset: number; typeText: string; refs: Array<{ start: number; end: number }> } | null {
  const recordOffset = Math.floor((maxImmediateSize - ATOM_RECORD_SIZE) / 16) * 16;
  if (recordOffset < 4) return null;
  const decl = decls.find((d) => d.kind === 'gvar' && declName(d) === name);
  const typeRef = decl?.kind === 'gvar' ? decl.name.typeRef : undefined;
  if (!typeRef) return null;
  const refs: Array<{ start: number; end: number }> = [];
  let shadowed = false;
  walkScopes(ast.rootScope, (scope) => {
    for (const item of scope.contents) {
      if (item.kind === 'ref' && item.originalName === name) refs.push({ start: item.refIdentElem.start, end: item.refIdentElem.end });
      if (item.kind === 'decl' && item.originalName === name && !item.isGlobal) shadowed = true;
    }
  });
  if (shadowed) return null;
  // A type known to be too large leaves no room: the fallback, without compiling a doomed twin.
  const layout = typeLayout(ast.srcModule.src, typeRef, decls, 0);
  if (layout && layout.size > recordOffset) return null;
  return { recordOffset, typeText: ast.srcModule.src.slice(typeRef.start, typeRef.end), refs };
}

/** Scalar types of immediate data: [size, alignment] in bytes. */
const SCALAR_LAYOUT: Record<string, [number, number]> = { u32: [4, 4], i32: [4, 4], f32: [4, 4], f16: [2, 2] };

/**
 * Size and alignment of a host-shareable type (WGSL §"Memory Layout"): scalars, vectors and
 * structs of them, through aliases; undefined for anything else (the twin's compile decides).
 */
function typeLayout(code: string, ref: TypeRefElem, decls: GlobalDeclarationElem[], depth: number): { size: number; align: number } | undefined {
  if (depth > 16) return undefined;
  const name = ref.name.originalName;
  const scalar = SCALAR_LAYOUT[name];
  if (scalar && !ref.templateParams) return { size: scalar[0], align: scalar[1] };
  const vec = /^vec([234])([uifh]?)$/.exec(name);
  if (vec) {
    const n = Number(vec[1]);
    const element = vec[2] ? { u: 'u32', i: 'i32', f: 'f32', h: 'f16' }[vec[2]]! : ref.templateParams?.length === 1 ? code.slice(ref.templateParams[0].start, ref.templateParams[0].end).trim() : '';
    const e = SCALAR_LAYOUT[element];
    if (!e) return undefined;
    return { size: n * e[0], align: (n === 2 ? 2 : 4) * e[1] };
  }
  if (ref.templateParams) return undefined;
  const decl = decls.find((d) => (d.kind === 'struct' || d.kind === 'alias') && declName(d) === name);
  if (decl?.kind === 'alias') return typeLayout(code, decl.typeRef, decls, depth + 1);
  if (decl?.kind !== 'struct') return undefined;
  let offset = 0;
  let align = 1;
  for (const member of decl.members) {
    if (member.attributes?.length) return undefined; // @size / @align: not worth modelling here
    const m = typeLayout(code, member.typeRef, decls, depth + 1);
    if (!m) return undefined;
    offset = Math.ceil(offset / m.align) * m.align + m.size;
    align = Math.max(align, m.align);
  }
  return { size: Math.ceil(offset / align) * align, align };
}
