// The sketchpad (#sketchpad) draws on the first drag. Gradio's image editor starts with its image tool, and goes
// back to it after "Clear canvas": a drag then selects the page's text, and the pad shows "select the draw tool to
// start". Whenever that hint shows, the brush (the first button of the pad's tool bar) is picked for the visitor.
() => {
  const pickBrush = () => {
    const pad = document.getElementById("sketchpad");
    const brush = pad?.querySelector(".toolbar-wrap button");
    if (pad?.querySelector(".empty.wrap") && brush) brush.click();
  };
  new MutationObserver(pickBrush).observe(document.body, { childList: true, subtree: true });
  pickBrush();
}
