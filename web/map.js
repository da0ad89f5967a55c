// The map tab's thumbnails, as in TensorFlow's embedding projector: over the clickable map (#click-map), the test
// digit that a click there would pick is shown beside the pointer, its 28x28 pixels upscaled without smoothing, with
// its class; on a 2-D model's latent plane, also the digit decoded exactly under the pointer, as a click decodes it
// (by web/decoder.js, once the model's decoder is in the page). The app puts what this needs in the hidden #map-hover
// textbox (vae/map_clicks.py map_hover), new with each model: the map's units at each pixel column and row, every test
// digit's point and class, and a sprite sheet of the digits in Gradio's cache. Nothing is computed on the server while
// the pointer moves.
() => {
  const SCALE = 4; // thumbnail pixels per digit pixel
  const thumb = document.createElement("div");
  thumb.id = "map-thumb";
  thumb.style.cssText =
    "position: fixed; z-index: 1000; pointer-events: none; display: none; padding: 4px; background: #fff;" +
    "border: 1px solid #999; border-radius: 4px; box-shadow: 0 2px 6px rgba(0,0,0,.3); font: 14px sans-serif;" +
    "color: #000; text-align: center;";
  const canvas = document.createElement("canvas"); // the nearest test digit
  const decoded = document.createElement("canvas"); // the plane: the digit decoded under the pointer
  decoded.id = "map-decoded";
  for (const c of [canvas, decoded]) c.style.cssText = "display: inline-block; image-rendering: pixelated; margin: 0 2px;";
  const caption = document.createElement("div");
  thumb.append(canvas, decoded, caption);
  document.body.append(thumb);

  let text = null; // the textbox's value that `map` was read from
  let map = null; // the parsed hover data, with its sprite image
  const hoverData = () => {
    const box = document.querySelector("#map-hover textarea, #map-hover input");
    const value = box ? box.value : "";
    if (value !== text) {
      text = value;
      map = null;
      if (value) {
        map = JSON.parse(value);
        map.image = new Image();
        map.image.onload = () => lastMove && update(lastMove); // the pointer may rest on the map meanwhile
        if (map.sprite) map.image.src = new URL(map.sprite, document.baseURI).href;
      }
    }
    return map;
  };

  // The pixel of the picture under the pointer, as Gradio's own click handler finds it (its image fits its box,
  // never upscaled, centred), or null outside the picture.
  const pixelAt = (img, event) => {
    const box = img.getBoundingClientRect();
    const scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight, 1);
    const left = (box.width - img.naturalWidth * scale) / 2;
    const top = (box.height - img.naturalHeight * scale) / 2;
    const px = Math.round((event.clientX - box.left - left) / scale);
    const py = Math.round((event.clientY - box.top - top) / scale);
    return px >= 0 && py >= 0 && px < img.naturalWidth && py < img.naturalHeight ? [px, py] : null;
  };

  // The test digit nearest the map point of pixel (px, py), as the server's pick finds it; null off the plot, or,
  // on the t-SNE map, when no dot is within the radius.
  const digitAt = (data, px, py) => {
    if (px >= data.xs.length || py >= data.ys.length) return null;
    const x = data.xs[px];
    const y = data.ys[py];
    let best = -1;
    let bestDistance = Infinity;
    data.points.forEach(([u, v], i) => {
      const distance = (u - x) ** 2 + (v - y) ** 2;
      if (distance < bestDistance) [best, bestDistance] = [i, distance];
    });
    return data.radius === null || bestDistance <= data.radius ** 2 ? best : null;
  };

  // The thumbnail: the test digit `index` (or none: null) and, drawn already, the decoded digit (or none: false).
  const show = (data, index, plane, pixel, event) => {
    const [height, width] = data.cell;
    canvas.style.display = index === null ? "none" : "inline-block";
    decoded.style.display = plane ? "inline-block" : "none";
    if (plane) {
      decoded.style.width = `${width * SCALE}px`;
      decoded.style.height = `${height * SCALE}px`;
    }
    const names = [];
    if (plane) names.push(`decoded at z = (${plane.map((v) => v.toFixed(2)).join(", ")})`);
    if (index !== null) {
      canvas.width = width * SCALE;
      canvas.height = height * SCALE;
      const context = canvas.getContext("2d");
      context.imageSmoothingEnabled = false;
      const column = index % data.columns;
      const row = Math.floor(index / data.columns);
      context.drawImage(data.image, column * width, row * height, width, height, 0, 0, canvas.width, canvas.height);
      const name = data.captions[data.labels[index]];
      names.push(plane ? `nearest test digit: ${name}` : name);
      thumb.dataset.index = String(index); // which digit, and under which pixel: what the tests compare with /pick
    } else delete thumb.dataset.index;
    caption.textContent = names.join(" · ");
    thumb.dataset.pixel = pixel.join(",");
    thumb.style.display = "block";
    const right = event.clientX + 16 + thumb.offsetWidth > window.innerWidth; // keep it inside the window
    thumb.style.left = `${right ? event.clientX - 16 - thumb.offsetWidth : event.clientX + 16}px`;
    thumb.style.top = `${Math.max(0, event.clientY - thumb.offsetHeight - 16)}px`;
  };

  const hide = () => {
    thumb.style.display = "none";
    delete thumb.dataset.index;
    delete thumb.dataset.pixel;
  };

  let lastMove = null; // the latest move over the map
  const update = (event) => {
    const img = event.target instanceof Element ? event.target.closest("#click-map img") : null;
    lastMove = img ? event : null;
    const data = img && hoverData();
    const pixel = data && img.naturalWidth ? pixelAt(img, event) : null;
    const sprite = data && data.image.complete && data.image.naturalWidth;
    const index = pixel && sprite ? digitAt(data, ...pixel) : null;
    const inside = pixel && pixel[0] < data.xs.length && pixel[1] < data.ys.length;
    const z = inside && data.kind === "plane" ? [data.xs[pixel[0]], data.ys[pixel[1]]] : null;
    const plane = z && window.studioDecoder?.decode?.(data.name, z, decoded) ? z : false;
    if (index === null && !plane) hide();
    else show(data, index, plane, pixel, event);
  };
  document.addEventListener("mousemove", update);
  document.addEventListener("mouseleave", hide);
}
