// The TF.js original of @vladmandic/face-api's expression net, run by the package's own code in Node
// (its ESM bundle carries TF.js; the CPU backend): the reference our ONNX conversion is checked against.
// usage: node faceapi_reference.mjs PACKAGE_DIR INPUT.f32 N  -> JSON [[7 probabilities] x N] on stdout
// INPUT.f32: N x 112 x 112 x 3 float32 RGB pixels in 0..255, as face-api feeds its nets.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [pkg, input, n] = process.argv.slice(2);
// The ESM bundle leaves Node's util module out, and TF.js's Node platform needs it: hide Node while the
// bundle initialises, so TF.js takes its platform-neutral path (Node 20 has TextEncoder and fetch).
const node = globalThis.process;
globalThis.process = { env: {} };
let faceapi;
try {
  faceapi = await import(pathToFileURL(join(pkg, 'dist', 'face-api.esm.js')).href);
} finally {
  globalThis.process = node;
}
const { tf } = faceapi;
// TF.js's Platform interface, from Node's own globals.
tf.setPlatform('node-globals', {
  fetch: (url, init) => fetch(url, init),
  now: () => performance.now(),
  encode: (text) => new TextEncoder().encode(text),
  decode: (bytes, encoding) => new TextDecoder(encoding).decode(bytes),
  isTypedArray: (a) => ArrayBuffer.isView(a) && !(a instanceof DataView),
  setTimeoutCustom: (fn, delay) => setTimeout(fn, delay),
});
await tf.setBackend('cpu');
await tf.ready();
const manifest = JSON.parse(readFileSync(join(pkg, 'model', 'face_expression_model-weights_manifest.json')));
const bin = readFileSync(join(pkg, 'model', 'face_expression_model.bin'));
const weights = tf.io.decodeWeights(bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
  manifest[0].weights);
// face-api's own environment: no canvas here, the input is a tensor.
class None_ {}
faceapi.env.monkeyPatch({ Canvas: None_, CanvasRenderingContext2D: None_, Image: None_, ImageData: None_,
  Video: None_, createCanvasElement: () => { throw new Error('no canvas'); },
  createImageElement: () => { throw new Error('no image'); } });
const net = faceapi.nets.faceExpressionNet;
net.loadFromWeightMap(weights);
const raw = readFileSync(input);
const pixels = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
const batch = tf.tensor4d(pixels, [Number(n), 112, 112, 3]);
const probs = await net.forward(tf.unstack(batch));   // an array of images: a batch NetInput
process.stdout.write(JSON.stringify(await probs.array()));
