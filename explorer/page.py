"""What the explorer's page says and how it looks, apart from its layout (explorer.app): the
title and introduction, the CSS, the projection plot's hover-and-click script, and each
panel's help text."""

TITLE = "genreid explorer"
INTRO = ("Person re-identification where a person's **identity is the conditioning** of a diffusion "
         "generator: generate people from identity vectors, walk the identity space, and split real "
         "pictures back into identity and noise.")

CSS = """
.pixelated img { image-rendering: pixelated; }
/* Output pictures carry captions along their top edge: keep the block's label above the
   picture instead of floating over those captions. */
.pixelated label.float, .static-label label.float { position: static !important;
  margin: var(--block-label-margin) 0 0 var(--block-label-margin); }
.pixelated .top-panel, .static-label .top-panel {
  top: calc(-1 * var(--size-8)) !important; }  /* into the label's row */
.genreid-tip { display: none; position: fixed; z-index: 10000; pointer-events: none;
  background: white; border: 1px solid #bbb; border-radius: 6px; padding: 4px;
  box-shadow: 0 2px 8px rgba(0,0,0,.25); font-size: 12px; text-align: center; }
.genreid-tip img { width: 64px; height: 128px; image-rendering: pixelated; display: block; }
"""

# A hover tooltip with the point's thumbnail, and clicks on plotly points sent to Python:
# gr.Plot has no click event, so this script attaches to the plot Gradio draws.
BRIDGE_HTML = '<div class="genreid-tip"><img alt=""><span></span></div>'
BRIDGE_JS = """
const tip = element.querySelector('.genreid-tip');
const img = tip.querySelector('img');
const cap = tip.querySelector('span');
function attach() {
  const gd = document.querySelector('#projection-plot .js-plotly-plot');
  if (!gd || typeof gd.on !== 'function' || gd.__genreid) return;
  gd.__genreid = true;
  gd.on('plotly_hover', (ev) => {
    const p = ev && ev.points && ev.points[0];
    if (!p || !p.customdata) return;
    const key = p.customdata[0], uri = p.customdata[1];
    cap.textContent = key;
    if (uri) { img.src = uri; img.style.display = 'block'; } else { img.style.display = 'none'; }
    const e = ev.event || {};
    tip.style.left = ((e.clientX || 0) + 16) + 'px';
    tip.style.top = ((e.clientY || 0) + 16) + 'px';
    tip.style.display = 'block';
  });
  gd.on('plotly_unhover', () => { tip.style.display = 'none'; });
  gd.on('plotly_click', (ev) => {
    const p = ev && ev.points && ev.points[0];
    if (p && p.customdata) trigger('click', {key: p.customdata[0]});
  });
}
setInterval(attach, 700);
"""

HELP = {
    "generate": "Rows are identities — training persons chosen by id (type `pid 2`, `row 0` or "
                "`prior 3`), plus new ones sampled from the identity prior — and columns are noises. "
                "The noise is the same down each column, so a column shows what identity alone "
                "changes. Seeded: the same inputs give the same pictures; *New noises* draws a new seed.",
    "sweep": "One identity and one fixed noise. Each row moves one coordinate of the identity vector "
             "across a range, the value above each picture. By default the range is in standard "
             "deviations of that coordinate over the training identities (mean ± 3 sd), so the sweep "
             "stays where identities are; the paper's absolute range (−0.3 to 0.3) is an option. "
             "The table ranks coordinates by how much the picture changes, each over its own range.",
    "directions": "One identity and one fixed noise, walked along the principal directions of the "
                  "training identities — the directions in which persons differ most — one row "
                  "per direction, in that direction's standard deviations (0 is the identity "
                  "itself). The table gives each direction's share of the identities' variance; "
                  "the download holds each direction as a vector.",
    "neighbors": "An identity and its nearest training identities by Euclidean distance in the "
                 "identity space, each shown by a portrait (a real training picture with `--data`, "
                 "else generated with one fixed noise); the closest and farthest pairs overall and "
                 "the distribution of all pairwise distances.",
    "projection": "The identity space in 2-D: training identities, prior samples and, with `--data`, "
                  "the encoded gallery. PCA is instant; UMAP is computed once in the background "
                  "(about a minute the first time, then cached on disk). Hover a point for its "
                  "thumbnail; click it (in the plot or in the map beside it) or pick it in the list "
                  "to make it the current identity of the other panels.",
    "retrieve": "A query picture against the gallery by distance between identity vectors (Img2ID): "
                "the top matches, framed green (right person) or red (wrong) where labels are "
                "known, and the query's average precision.",
    "decompose": "A picture split into its identity vector (Img2ID) and its noise (Img2Noise, shown "
                 "clipped to ±2.5 and rescaled), regenerated as GEN(noise, identity), with the "
                 "reconstruction error.",
}
