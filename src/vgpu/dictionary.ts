// WebIDL's dictionary checks that dawn.node gets wrong: given null, undefined or a missing
// required dictionary member (a descriptor, `compute`, a bind group entry's `resource`), Dawn's
// binding aborts the whole Node process instead of throwing. Every process shares that process
// with the kernel, so vgpu throws WebIDL's TypeError first, to the one caller.

function isDictionary(value: unknown): value is object {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Throws TypeError unless `value` is an object that a dictionary conversion accepts. */
export function requireDictionary(method: string, value: unknown, what = 'descriptor'): void {
  if (!isDictionary(value)) {
    throw new TypeError(`Failed to execute '${method}' on 'GPUDevice': ${what} is not an object.`);
  }
}

/** Checks a descriptor and its sequence `member`: each element must be a dictionary too. */
export function requireDictionaries(method: string, descriptor: unknown, member: string): void {
  requireDictionary(method, descriptor);
  const list = (descriptor as Record<string, unknown>)[member];
  if (list === undefined) return;
  if (typeof list !== 'object' || list === null || typeof (list as Iterable<unknown>)[Symbol.iterator] !== 'function') {
    throw new TypeError(`Failed to execute '${method}' on 'GPUDevice': ${member} is not a sequence.`);
  }
  let index = 0;
  for (const element of list as Iterable<unknown>) requireDictionary(method, element, `${member}[${index++}]`);
}
