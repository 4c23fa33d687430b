// Objects kept for their shape alone.
//
// V8 keeps an object shape (hidden class) only while some object of that shape lives: the steps by
// which an object gets its fields are held weakly. A full collection that finds none frees the
// shape and throws away every optimized function that checks it ("weak objects" in
// `--trace-deopt`), so a shape whose objects all live for one call only (a submit's scratch
// object, Node's Immediate) costs the call path its optimized code at every full collection.
// Keeping one object of such a shape, for the life of the Node process, keeps the shape.
// (src/vgpu/shapeKeepers.ts does the same for the objects a process owns.)
//
// A module's top-level constant that no function reads is not kept: V8 frees it once the module
// has run. These are kept in an array a function reads.

const kept: object[] = [];

/** Keeps `object` (and so its shape) alive for the life of the Node process; returns it. */
export function keepShape<T extends object>(object: T): T {
  kept.push(object);
  return object;
}
