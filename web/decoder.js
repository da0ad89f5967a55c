// The decoder in the page: the Sliders' digit, the Latent walk's scrubber and (web/map.js) the 2-D model's plane under
// the pointer are decoded here, at screen rate, with no request to the server. The app puts what this needs in hidden
// textboxes (vae/page_decoder.py): #decoder-data (the selected model's decoder weights as float16 safetensors, served
// from Gradio's cache under a name made of their hash, fetched once per model and kept in the browser's cache; the
// sliders' directions), #slide-latent (the sliders' start point) and #walk-latents (the walk's frames). The server
// still draws every digit the page asks it for (a slider let go, a walk, a click), so a model whose decoder cannot run
// here, or weights not loaded yet, leave the page as it was without this script; #decoder-mode says which one draws.
() => {
  const studio = { model: null, drawn: 0, offsets: null, decode: null }; // model: the name of the one loaded
  window.studioDecoder = studio; // what web/map.js and the tests use
  const textOf = (id) => {
    const box = document.querySelector(`#${id} textarea, #${id} input`);
    return box ? box.value : "";
  };

  // --- the weights: safetensors (an 8-byte little-endian header length, a JSON header, the data), float16 only ---
  const halfToFloat = (bits) => {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const fraction = bits & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24; // subnormal
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  };
  const readSafetensors = (buffer) => {
    const view = new DataView(buffer);
    const headerLength = Number(view.getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLength)));
    const tensors = {};
    for (const [name, { dtype, shape, data_offsets: [begin, end] }] of Object.entries(header)) {
      if (name === "__metadata__") continue;
      if (dtype !== "F16") throw new Error(`${name} is ${dtype}, not F16`);
      const values = new Float32Array((end - begin) / 2);
      const start = 8 + headerLength + begin;
      for (let i = 0; i < values.length; i++) values[i] = halfToFloat(view.getUint16(start + 2 * i, true));
      tensors[name] = { shape, values };
    }
    return tensors;
  };

  const ACTIVATIONS = {
    elu: (x) => (x > 0 ? x : Math.expm1(x)),
    relu: (x) => (x > 0 ? x : 0),
    silu: (x) => x / (1 + Math.exp(-x)),
    tanh: Math.tanh,
  };

  // The weights file, from the browser's cache when an earlier visit stored it (its URL names its contents: a file of
  // the same URL is the same file), else from the app, then stored; the newest KEPT files are kept. The Cache API
  // needs a secure context (https, or the app on localhost): elsewhere each visit fetches the file once.
  const CACHE = "vae-studio-decoders";
  const KEPT = 8;
  const fetchWeights = async (url) => {
    const store = window.caches ? await caches.open(CACHE).catch(() => null) : null;
    const stored = store && (await store.match(url));
    if (stored) return stored.arrayBuffer();
    const reply = await fetch(url);
    if (!reply.ok) throw new Error(`${reply.status} ${reply.statusText}`);
    if (store) {
      await store.put(url, reply.clone()).catch(() => null); // a full disk: fetched again next time
      const keys = await store.keys();
      await Promise.all(keys.slice(0, Math.max(0, keys.length - KEPT)).map((key) => store.delete(key)));
    }
    return reply.arrayBuffer();
  };

  // A model: its layers ({weight (out*in, row by row), bias, rows, columns}), activation, image shape.
  const loaded = new Map(); // weights URL → Promise of the model: each model's weights are read once a page
  const load = (data) => {
    if (!loaded.has(data.weights)) {
      const url = new URL(data.weights, document.baseURI).href;
      const model = fetchWeights(url)
        .then((buffer) => {
          const tensors = readSafetensors(buffer);
          const layers = [];
          for (let i = 0; i < data.layers; i++) {
            const { shape, values } = tensors[`layers.${i}.weight`];
            layers.push({ weight: values, bias: tensors[`layers.${i}.bias`].values, rows: shape[0], columns: shape[1] });
          }
          return { layers, activation: ACTIVATIONS[data.activation], shape: data.image_shape };
        });
      loaded.set(data.weights, model);
    }
    return loaded.get(data.weights);
  };

  // z (D numbers) → the Bernoulli means of the pixels (C*H*W), as VAE.decode computes them.
  const decodeWith = (model, z) => {
    let h = Float64Array.from(z);
    model.layers.forEach(({ weight, bias, rows, columns }, i) => {
      const hidden = i < model.layers.length - 1;
      const out = new Float64Array(rows);
      for (let r = 0; r < rows; r++) {
        let sum = bias[r];
        const row = r * columns;
        for (let c = 0; c < columns; c++) sum += weight[row + c] * h[c];
        out[r] = hidden ? model.activation(sum) : 1 / (1 + Math.exp(-sum));
      }
      h = out;
    });
    return h;
  };

  // Pixels (C*H*W, channel by channel) → the canvas, one canvas pixel a digit pixel, rounded as vae.imaging.to_uint8.
  const draw = (canvas, model, pixels) => {
    const [channels, height, width] = model.shape;
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    const image = context.createImageData(width, height);
    const area = height * width;
    for (let i = 0; i < area; i++) {
      for (let k = 0; k < 3; k++) {
        const p = pixels[(channels === 1 ? 0 : k) * area + i];
        image.data[4 * i + k] = Math.round(Math.min(Math.max(p, 0), 1) * 255);
      }
      image.data[4 * i + 3] = 255;
    }
    context.putImageData(image, 0, 0);
  };

  // --- the selected model ---
  let text = null; // #decoder-data's value that `data` was read from
  let data = null;
  let model = null; // data's model, once its weights are loaded
  const redraws = new Set(); // what to draw again when the weights arrive
  const current = () => {
    const value = textOf("decoder-data");
    if (value !== text) {
      text = value;
      data = value ? JSON.parse(value) : null;
      model = null;
      studio.model = null;
      if (data && data.weights) {
        const wanted = data;
        load(wanted).then(
          (ready) => {
            if (data !== wanted) return;
            model = ready;
            studio.model = wanted.name;
            showMode();
            redraws.forEach((redraw) => redraw());
          },
          (error) => {
            if (data !== wanted) return;
            data = { name: wanted.name, unsupported: `The decoder's weights did not load (${error.message}): the server draws.` };
            showMode();
          },
        );
      }
      showMode();
    }
    return model && data ? { model, data } : null;
  };

  // The page's word on which one draws, under the Sliders' digit.
  const showMode = () => {
    const view = document.getElementById("slide-view");
    if (!view) return;
    let note = document.getElementById("decoder-mode");
    if (!note) {
      note = document.createElement("div");
      note.id = "decoder-mode";
      note.style.cssText = "font-size: var(--text-sm); color: var(--body-text-color-subdued); padding: 4px 0;";
      view.append(note);
    }
    const mode = model ? "browser" : data && data.unsupported ? "server" : "loading";
    if (note.dataset.mode === mode && note.dataset.name === data?.name) return;
    note.dataset.mode = mode;
    note.dataset.name = data?.name ?? "";
    note.textContent = {
      browser: "Decoded in your browser as you drag.",
      server: `${data?.unsupported} The digit changes when you let go of a slider.`,
      loading: "Loading the decoder into the page…",
    }[mode];
  };

  // The latents in a hidden textbox for the selected model, or null.
  const latentsOf = (id, ready) => {
    const value = textOf(id);
    if (!value) return null;
    const found = JSON.parse(value);
    return found.name === ready.data.name ? found.latents : null;
  };

  // --- the Sliders: the start point moved by offsets[k] spreads along direction k (vae.steering.slide_latent), and
  // along the attribute directions (attribute_latent) ---
  // The digit is drawn on a canvas laid over the server's picture, whenever the start point or a slider changes (a
  // drag, the keyboard, a reset): the two always show the same digit, and the server's answers change nothing here.
  const overlay = document.createElement("canvas");
  overlay.id = "slide-canvas";
  overlay.style.cssText = "position: absolute; pointer-events: none; image-rendering: pixelated; display: none;";
  let drawnKey = null; // what the overlay shows: start point, slider values and the picture's box
  const drawSlide = () => {
    const ready = current();
    const img = document.querySelector("#slide-digit img");
    const start = ready && img && latentsOf("slide-latent", ready);
    if (!start || !ready.data.directions || !img.offsetWidth) {
      overlay.style.display = "none";
      drawnKey = null;
      return;
    }
    // Each slider: its element id, direction and spread; the principal directions', then the attributes' (if any).
    const moves = [
      ...ready.data.directions.map((direction, k) => ({ slider: `slide-${k + 1}`, direction, spread: ready.data.spreads[k] })),
      ...(ready.data.attributes || []),
    ];
    const offsets = moves.map(({ slider }) => {
      const range = document.querySelector(`#${slider} input[type="range"]`);
      return range ? Number(range.value) : 0;
    });
    const box = [img.offsetLeft, img.offsetTop, img.offsetWidth, img.offsetHeight];
    const key = JSON.stringify([ready.data.weights, start, offsets, box]);
    if (key === drawnKey) return;
    const z = Float64Array.from(start[0]);
    moves.forEach(({ direction, spread }, k) => {
      direction.forEach((value, d) => {
        z[d] += offsets[k] * spread * value;
      });
    });
    draw(overlay, ready.model, decodeWith(ready.model, z));
    if (overlay.parentElement !== img.parentElement) {
      img.parentElement.style.position = "relative";
      img.parentElement.append(overlay);
    }
    Object.assign(overlay.style, { left: `${box[0]}px`, top: `${box[1]}px`, width: `${box[2]}px`, height: `${box[3]}px` });
    overlay.style.display = "block";
    drawnKey = key;
    studio.drawn += 1;
    studio.offsets = offsets; // what the overlay shows
  };

  let pending = false; // one decode a frame, however many input events arrive in it
  const slider = (event) => {
    const found = event.target instanceof Element ? event.target.closest('[id^="slide-"]') : null;
    return found && /^slide-(\d+|thickness|slant)$/.test(found.id) ? found : null; // #slide-1 … #slide-8, attributes
  };
  document.addEventListener("input", (event) => {
    if (!slider(event) || pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      drawSlide();
    });
  });
  // Drawn by the server: a slider moved with the keyboard is sent as Gradio sends a slider let go.
  document.addEventListener("keyup", (event) => {
    if (!model && slider(event) && event.target.type === "range") {
      event.target.dispatchEvent(new PointerEvent("pointerup", { bubbles: true }));
    }
  });

  // --- the Latent walk's scrubber: frame by frame along the walk the server drew ---
  const scrubber = () => {
    const box = document.querySelector("#walk-scrubber .scrub");
    if (!box) return null;
    if (!box.querySelector("input")) {
      box.innerHTML =
        '<label style="display: block; font-size: var(--text-sm);">Scrub along the walk ' +
        '<span class="frame"></span><input type="range" min="0" max="0" step="1" value="0" style="width: 100%;">' +
        '</label><canvas style="width: 168px; height: 168px; image-rendering: pixelated;"></canvas>';
    }
    return box;
  };
  const drawWalk = () => {
    const box = scrubber();
    const ready = current();
    const frames = ready && box && latentsOf("walk-latents", ready);
    if (!box) return;
    box.style.display = frames ? "" : "none";
    if (!frames) return;
    const range = box.querySelector("input");
    range.max = String(frames.length - 1);
    const frame = Math.min(Number(range.value), frames.length - 1);
    box.querySelector(".frame").textContent = `(frame ${frame + 1} of ${frames.length})`;
    draw(box.querySelector("canvas"), ready.model, decodeWith(ready.model, frames[frame]));
    box.dataset.frame = String(frame);
    box.dataset.drawn = String(Number(box.dataset.drawn || 0) + 1);
  };
  redraws.add(drawWalk);
  document.addEventListener("input", (event) => {
    if (event.target instanceof Element && event.target.closest("#walk-scrubber .scrub")) drawWalk();
  });
  // The hidden textboxes change without an event the page can listen to: read them ten times a second (a string
  // comparison). A new model's weights start loading; a new walk (or model) shows its first frame.
  let walkText = null;
  const poll = () => {
    current();
    showMode(); // the Sliders' tab may have been drawn since
    drawSlide();
    const value = textOf("walk-latents");
    if (value !== walkText || !document.querySelector("#walk-scrubber .scrub input")) {
      walkText = value;
      const box = scrubber();
      if (box) box.querySelector("input").value = "0";
      drawWalk();
    }
  };
  setInterval(poll, 100);
  poll();

  // For web/map.js: z → pixels on `canvas` for the model named `name`, true when drawn (false: not loaded, or another).
  studio.decode = (name, z, canvas) => {
    const ready = current();
    if (!ready || ready.data.name !== name) return false;
    draw(canvas, ready.model, decodeWith(ready.model, z));
    return true;
  };
}
