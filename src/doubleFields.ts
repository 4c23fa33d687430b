// Counters that outgrow a small integer, kept as doubles from the start.
//
// V8 stores a field that has only held small integers (Smis, below 2^31) as one; the first value
// past that changes the field's representation, which deprecates the object's hidden class and
// deoptimizes, all at once, every function optimized against it. A process's device time crosses
// 2^31 ns after 2.1 s of work, a device's memory in use 2^31 bytes at 2 GiB: on the call path that
// was about twenty hot functions (the dispatcher's pump, enqueue, issue, settle; submit, finish,
// unwrap, touch, ...) thrown back to the interpreter and compiled again, once per Node process
// and field (docs/benchmarks.md, "The call path, issue 17 sixth pass"). A field first given a
// fraction is a double from the start, so nothing changes when it grows.

/** Sets each of `fields` of `object` to 0, stored so that V8 keeps it as a double (see above). */
export function startAsDoubles<T extends object>(object: T, fields: readonly (keyof T)[]): void {
  const record = object as Record<keyof T, unknown>;
  for (const field of fields) {
    record[field] = 0.5;
    record[field] = 0;
  }
}
