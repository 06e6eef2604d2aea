#!/usr/bin/env node
// skinseg reference client: turns raw images into skinseg's lesion masks with nothing but the ONNX
// model file, by the rules of docs/model-contract.md (contract version = skinseg.format 4).
//
//   node clients/js/segment.js --model MODEL.onnx --output DIR IMAGE...
//
// Writes DIR/<stem>.png (0/255, the image's size). onnxruntime-node runs the model; sharp decodes
// (EXIF orientation applied) and encodes. Every other step is written here, to the contract, because
// a client must not depend on skinseg's Python code to get the same mask.
"use strict";

const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");
const sharp = require("sharp");

// ---- the model file's metadata: ONNX ModelProto field 14 (metadata_props), read from the bytes,
// because the JavaScript runtimes do not expose metadata_props.
function readVarint(buf, pos) {
  let result = 0, shift = 0, b;
  do {
    b = buf[pos++];
    result += (b & 0x7f) * 2 ** shift;
    shift += 7;
  } while (b & 0x80);
  return [result, pos];
}

function fields(buf, start, end, visit) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = readVarint(buf, pos);
    const field = Math.floor(key / 8), wire = key & 7;
    if (wire === 0) { [, pos] = readVarint(buf, pos); }
    else if (wire === 1) { pos += 8; }
    else if (wire === 5) { pos += 4; }
    else if (wire === 2) {
      let len;
      [len, pos] = readVarint(buf, pos);
      visit(field, pos, pos + len);
      pos += len;
    } else { throw new Error(`unsupported protobuf wire type ${wire}`); }
  }
}

function readMetadata(file) {
  const buf = fs.readFileSync(file);
  const meta = {};
  fields(buf, 0, buf.length, (field, s, e) => {
    if (field !== 14) return;
    let k = "", v = "";
    fields(buf, s, e, (f, a, b) => {
      if (f === 1) k = buf.toString("utf8", a, b);
      if (f === 2) v = buf.toString("utf8", a, b);
    });
    meta[k] = v;
  });
  return meta;
}

function contract(meta, file) {
  const fmt = meta["skinseg.format"];
  if (!["1", "2", "3", "4"].includes(fmt)) throw new Error(`${file}: not a skinseg model this client reads (skinseg.format = ${fmt})`);
  const json = (k, d) => (meta[k] ? JSON.parse(meta[k]) : d);
  const c = {
    layout: meta["skinseg.layout"] || "NHWC",
    inputDtype: meta["skinseg.input_dtype"] || "uint8",
    output: meta["skinseg.output"] || "probability",
    tile: [parseInt(meta["skinseg.tile_height"], 10), parseInt(meta["skinseg.tile_width"], 10)],
    scale: !meta["skinseg.scale"] || meta["skinseg.scale"] === "native" ? null : parseInt(meta["skinseg.scale"], 10),
    threshold: meta["skinseg.threshold"] ? parseFloat(meta["skinseg.threshold"]) : 0.5,
    post: Object.assign({ blur: 0, keep: "largest", min_area: 0, fill_holes: true }, json("skinseg.postprocess", {})),
    resize: Object.assign({ image_down: "area", image_up: "linear", probability: "linear" }, json("skinseg.resize", {})),
    tiling: Object.assign({ overlap: 0.5, sigma_scale: 0.125, pad: "edge" }, json("skinseg.tiling", {})),
    tta: meta["skinseg.tta"] === "true", // format 3: average the tile over its flips
    // format 4: below this confidence a mask is flagged for a person to check; 0.65 when the file has none
    reviewThreshold: meta["skinseg.review_threshold"] ? parseFloat(meta["skinseg.review_threshold"]) : 0.65,
  };
  if (c.layout !== "NHWC" || c.inputDtype !== "uint8" || c.output !== "probability") {
    throw new Error(`${file}: this client runs uint8 NHWC models with a probability output (skinseg export writes them)`);
  }
  return c;
}

// ---- resizing, as OpenCV does it (the contract names OpenCV's methods) -----------------------------
// Area (shrinking): each output pixel is the mean of the input area it covers, partial pixels weighted.
function areaTable(src, dst) {
  const scale = src / dst, table = [];
  for (let d = 0; d < dst; d++) {
    const f1 = d * scale, f2 = f1 + scale, cell = Math.min(scale, src - f1);
    const s1 = Math.ceil(f1), s2 = Math.floor(f2), taps = [];
    if (s1 - f1 > 1e-3) taps.push([s1 - 1, (s1 - f1) / cell]);
    for (let s = s1; s < s2; s++) taps.push([s, 1 / cell]);
    if (f2 - s2 > 1e-3 && s2 < src) taps.push([s2, Math.min(Math.min(f2 - s2, 1), cell) / cell]);
    table.push(taps);
  }
  return table;
}

// Linear with half-pixel centres: src = (dst + 0.5) * scale - 0.5, clamped at the edges.
function linearTable(src, dst) {
  const scale = src / dst, table = [];
  for (let d = 0; d < dst; d++) {
    let f = (d + 0.5) * scale - 0.5;
    let i = Math.floor(f);
    let w = f - i;
    if (i < 0) { i = 0; w = 0; }
    if (i >= src - 1) { i = src - 1; w = 0; }
    table.push(w > 0 ? [[i, 1 - w], [i + 1, w]] : [[i, 1]]);
  }
  return table;
}

function resizeTable(method, src, dst) {
  if (method === "area") return src > dst ? areaTable(src, dst) : linearTable(src, dst); // OpenCV: area up = linear
  if (method === "linear") return linearTable(src, dst);
  throw new Error(`resize method ${method}: this client implements area and linear`);
}

// Separable resize of a float image with `ch` channels (rows first, then columns).
function resize(data, h, w, ch, oh, ow, method) {
  const tx = resizeTable(method, w, ow), ty = resizeTable(method, h, oh);
  const tmp = new Float32Array(h * ow * ch);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < ow; x++) {
      for (let c = 0; c < ch; c++) {
        let acc = 0;
        for (const [s, wt] of tx[x]) acc += data[(y * w + s) * ch + c] * wt;
        tmp[(y * ow + x) * ch + c] = acc;
      }
    }
  }
  const out = new Float32Array(oh * ow * ch);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      for (let c = 0; c < ch; c++) {
        let acc = 0;
        for (const [s, wt] of ty[y]) acc += tmp[(s * ow + x) * ch + c] * wt;
        out[(y * ow + x) * ch + c] = acc;
      }
    }
  }
  return out;
}

// ---- the working scale: long side `scale` px, sizes rounded half up -----------------------------
function workingSize(h, w, scale) {
  if (!scale) return [h, w];
  const s = scale / Math.max(h, w);
  return [Math.max(1, Math.floor(h * s + 0.5)), Math.max(1, Math.floor(w * s + 0.5))];
}

// ---- tiling and blending -----------------------------------------------------------------------
function tileStarts(length, tile, overlap) {
  if (length <= tile) return [0];
  const step = Math.max(1, Math.floor(tile * (1 - overlap) + 0.5));
  const starts = [];
  for (let s = 0; s <= length - tile; s += step) starts.push(s);
  if (starts[starts.length - 1] !== length - tile) starts.push(length - tile);
  return starts;
}

function gauss1d(n, sigmaScale) {
  const g = new Float64Array(n);
  if (sigmaScale <= 0) return g.fill(1);
  let max = 0;
  for (let i = 0; i < n; i++) {
    const x = i - (n - 1) / 2;
    g[i] = Math.max(Math.exp(-0.5 * (x / (n * sigmaScale)) ** 2), 1e-6);
    max = Math.max(max, g[i]);
  }
  for (let i = 0; i < n; i++) g[i] /= max;
  return g;
}

// One tile's probability, clipped to [0, 1]; with TTA the mean over the tile and its horizontal,
// vertical and double flips, each prediction flipped back (float32 sums, in that order).
async function tileProbability(session, input, output, tile, th, tw, tta) {
  const run = async (t) => {
    const p = (await session.run({ [input]: new ort.Tensor("uint8", t, [1, th, tw, 3]) }))[output].data;
    const out = new Float32Array(th * tw);
    for (let i = 0; i < th * tw; i++) out[i] = Math.min(1, Math.max(0, p[i]));
    return out;
  };
  const prob = await run(tile);
  if (!tta) return prob;
  for (const [fy, fx] of [[false, true], [true, false], [true, true]]) {
    const flipped = new Uint8Array(tile.length);
    const src = (y, x) => ((fy ? th - 1 - y : y) * tw + (fx ? tw - 1 - x : x));
    for (let y = 0; y < th; y++) for (let x = 0; x < tw; x++) for (let k = 0; k < 3; k++) {
      flipped[(y * tw + x) * 3 + k] = tile[src(y, x) * 3 + k];
    }
    const p = await run(flipped);
    for (let y = 0; y < th; y++) for (let x = 0; x < tw; x++) prob[y * tw + x] += p[src(y, x)];
  }
  for (let i = 0; i < prob.length; i++) prob[i] = Math.fround(prob[i] / 4);
  return prob;
}

async function slidingWindow(session, img, h, w, c) {
  const [th, tw] = c.tile;
  const ph = Math.max(h, th), pw = Math.max(w, tw);
  const at = (y, x, k) => img[(Math.min(y, h - 1) * w + Math.min(x, w - 1)) * 3 + k]; // edge padding
  const gy = gauss1d(th, c.tiling.sigma_scale), gx = gauss1d(tw, c.tiling.sigma_scale);
  const ys = tileStarts(ph, th, c.tiling.overlap), xs = tileStarts(pw, tw, c.tiling.overlap);
  const acc = new Float32Array(ph * pw);
  const input = session.inputNames[0], output = session.outputNames[0];
  for (const y0 of ys) {
    for (const x0 of xs) {
      const tile = new Uint8Array(th * tw * 3);
      for (let y = 0; y < th; y++) for (let x = 0; x < tw; x++) for (let k = 0; k < 3; k++) {
        tile[(y * tw + x) * 3 + k] = at(y0 + y, x0 + x, k);
      }
      const p = await tileProbability(session, input, output, tile, th, tw, c.tta);
      for (let y = 0; y < th; y++) {
        for (let x = 0; x < tw; x++) {
          const prob = p[y * tw + x];
          acc[(y0 + y) * pw + x0 + x] += Math.fround(prob * Math.fround(gy[y] * gx[x]));
        }
      }
    }
  }
  const norm = (len, tile, starts, g) => {
    const t = new Float64Array(len);
    for (const s of starts) for (let i = 0; i < tile; i++) t[s + i] += g[i];
    return t;
  };
  const ny = norm(ph, th, ys, gy), nx = norm(pw, tw, xs, gx);
  const out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[y * w + x] = acc[y * pw + x] / ny[y] / nx[x];
  return out;
}

// ---- post-processing: blur, threshold (>=), largest 8-connected component, fill holes (4-connected)
function gaussianBlur(prob, h, w, sigma) {
  const k = Math.round(sigma * 4 * 2 + 1) | 1, r = (k - 1) / 2, kern = new Float64Array(k);
  let sum = 0;
  for (let i = 0; i < k; i++) { kern[i] = Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)); sum += kern[i]; }
  for (let i = 0; i < k; i++) kern[i] /= sum;
  const reflect = (i, n) => { // BORDER_REFLECT_101
    if (n === 1) return 0;
    while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - 2 - i;
    return i;
  };
  const tmp = new Float32Array(h * w), out = new Float32Array(h * w);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    let a = 0;
    for (let i = 0; i < k; i++) a += prob[y * w + reflect(x + i - r, w)] * kern[i];
    tmp[y * w + x] = a;
  }
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    let a = 0;
    for (let i = 0; i < k; i++) a += tmp[reflect(y + i - r, h) * w + x] * kern[i];
    out[y * w + x] = a;
  }
  return out;
}

function keepComponents(mask, h, w, keep, minArea) {
  const labels = new Int32Array(h * w), areas = [0];
  const stack = [];
  for (let i = 0; i < h * w; i++) {
    if (!mask[i] || labels[i]) continue;
    const id = areas.length;
    let area = 0;
    labels[i] = id;
    stack.push(i);
    while (stack.length) {
      const j = stack.pop(), y = Math.floor(j / w), x = j % w;
      area++;
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
        const yy = y + dy, xx = x + dx;
        if (yy < 0 || xx < 0 || yy >= h || xx >= w) continue;
        const n = yy * w + xx;
        if (mask[n] && !labels[n]) { labels[n] = id; stack.push(n); }
      }
    }
    areas.push(area);
  }
  const wanted = new Uint8Array(areas.length);
  if (keep === "largest") {
    let best = 0;
    for (let i = 1; i < areas.length; i++) if (areas[i] > (best ? areas[best] : -1)) best = i;
    if (best && areas[best] >= minArea) wanted[best] = 1;
  } else {
    for (let i = 1; i < areas.length; i++) if (areas[i] >= minArea) wanted[i] = 1;
  }
  const out = new Uint8Array(h * w);
  for (let i = 0; i < h * w; i++) out[i] = labels[i] ? wanted[labels[i]] : 0;
  return out;
}

function fillHoles(mask, h, w) {
  const outside = new Uint8Array(h * w), stack = [];
  const push = (i) => { if (!mask[i] && !outside[i]) { outside[i] = 1; stack.push(i); } };
  for (let x = 0; x < w; x++) { push(x); push((h - 1) * w + x); }
  for (let y = 0; y < h; y++) { push(y * w); push(y * w + w - 1); }
  while (stack.length) {
    const j = stack.pop(), y = Math.floor(j / w), x = j % w;
    if (y > 0) push(j - w);
    if (y < h - 1) push(j + w);
    if (x > 0) push(j - 1);
    if (x < w - 1) push(j + 1);
  }
  const out = new Uint8Array(h * w);
  for (let i = 0; i < h * w; i++) out[i] = outside[i] ? 0 : 1;
  return out;
}

// ---- confidence (contract 6): 1 - undecided pixels / largest lesion component, at the working scale
function confidence(prob, h, w, threshold) {
  let undecided = 0;
  const mask = new Uint8Array(h * w);
  for (let i = 0; i < h * w; i++) {
    if (prob[i] > 0.2 && prob[i] < 0.8) undecided++;
    mask[i] = prob[i] >= threshold ? 1 : 0;
  }
  if (!undecided) return 1;
  const largest = keepComponents(mask, h, w, "largest", 0);
  let lesion = 0;
  for (let i = 0; i < h * w; i++) lesion += largest[i];
  const c = Math.max(0, 1 - undecided / Math.max(1, lesion));
  return Math.round(c * 10000) / 10000;
}

// ---- one image -------------------------------------------------------------------------------------
async function segment(session, c, file) {
  const { data, info } = await sharp(file).rotate().removeAlpha().toColourspace("srgb").raw()
    .toBuffer({ resolveWithObject: true });
  const h = info.height, w = info.width;
  let rgb = data;
  if (info.channels !== 3) throw new Error(`${file}: expected 3 channels after decoding, got ${info.channels}`);
  const [wh, ww] = workingSize(h, w, c.scale);
  if (wh !== h || ww !== w) {
    const method = wh * ww < h * w ? c.resize.image_down : c.resize.image_up;
    const f = resize(Float32Array.from(rgb), h, w, 3, wh, ww, method);
    rgb = new Uint8Array(f.length);
    for (let i = 0; i < f.length; i++) {
      const v = Math.min(255, Math.max(0, f[i]));
      const r = Math.round(v);
      rgb[i] = Math.abs(v - Math.floor(v) - 0.5) < 1e-9 ? 2 * Math.round(v / 2) : r; // round half to even
    }
  }
  let prob = await slidingWindow(session, rgb, wh, ww, c);
  const conf = confidence(prob, wh, ww, c.threshold);
  if (wh !== h || ww !== w) prob = resize(prob, wh, ww, 1, h, w, c.resize.probability);
  if (c.post.blur > 0) prob = gaussianBlur(prob, h, w, c.post.blur);
  let mask = new Uint8Array(h * w);
  for (let i = 0; i < h * w; i++) mask[i] = prob[i] >= c.threshold ? 1 : 0;
  if (c.post.keep === "largest" || c.post.min_area > 0) mask = keepComponents(mask, h, w, c.post.keep, c.post.min_area);
  if (c.post.fill_holes && mask.some((v) => v)) mask = fillHoles(mask, h, w);
  for (let i = 0; i < h * w; i++) mask[i] *= 255;
  return { mask, h, w, confidence: conf, review: conf < c.reviewThreshold };
}

async function main(argv) {
  const args = { images: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--model") args.model = argv[++i];
    else if (argv[i] === "--output") args.output = argv[++i];
    else if (argv[i] === "-h" || argv[i] === "--help") args.help = true;
    else args.images.push(argv[i]);
  }
  if (args.help || !args.model || !args.output || !args.images.length) {
    console.error("usage: node segment.js --model MODEL.onnx --output DIR IMAGE...");
    return 2;
  }
  let c, session;
  try {
    c = contract(readMetadata(args.model), args.model);
    session = await ort.InferenceSession.create(args.model, { executionProviders: ["cpu"] });
  } catch (e) {
    console.error(`error: ${e.message}`);
    return 2;
  }
  fs.mkdirSync(args.output, { recursive: true });
  let failed = 0;
  for (const file of args.images) {
    try {
      const { mask, h, w, confidence: conf, review } = await segment(session, c, file);
      const out = path.join(args.output, path.parse(file).name + ".png");
      // toColourspace("b-w"): one 8-bit grey channel, as the contract (5.6) and skinseg infer write it;
      // without it sharp writes an RGB PNG
      await sharp(Buffer.from(mask), { raw: { width: w, height: h, channels: 1 } }).toColourspace("b-w").png()
        .toFile(out + ".part");
      fs.renameSync(out + ".part", out);
      console.log(`${file} -> ${out} confidence ${conf.toFixed(4)} review ${review ? "yes" : "no"}`);
    } catch (e) {
      failed++;
      console.error(`error: ${file}: ${e.message}`);
    }
  }
  return failed ? 1 : 0;
}

if (require.main === module) main(process.argv.slice(2)).then((code) => process.exit(code));
module.exports = { readMetadata, contract, workingSize, tileStarts, segment };
