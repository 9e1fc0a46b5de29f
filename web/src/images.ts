// Tensors that are pictures, drawn as pictures.

/** A float tensor of shape [H, W] or [1|3, H, W] is drawn as an image (scaled to its range). */
export function imageOf(values: number[], shape: number[]): string | null {
  const dims = shape.length === 3 ? shape : shape.length === 2 ? [1, ...shape] : null;
  if (!dims || (dims[0] !== 1 && dims[0] !== 3) || dims[1] < 4 || dims[2] < 4) return null;
  const [c, h, w] = dims;
  // Shapes come with the data (a report anyone with write access could have written): draw
  // only what is plausible and complete.
  if (h * w > 65_536 || values.length !== c * h * w) return null;
  const min = values.reduce((a, v) => Math.min(a, v), Infinity);
  const max = values.reduce((a, v) => Math.max(a, v), -Infinity);
  const scale = max > min ? 255 / (max - min) : 0;
  const canvas = document.createElement('canvas');
  canvas.width = w;
  canvas.height = h;
  const g = canvas.getContext('2d')!;
  const img = g.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    for (let k = 0; k < 3; k++) img.data[i * 4 + k] = (values[(c === 3 ? k : 0) * h * w + i] - min) * scale;
    img.data[i * 4 + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  return canvas.toDataURL();
}

