"""The genreid explorer: a Gradio app over `core.api.GenReID` (layout and wiring only; the
work is in `explorer.handlers` and `explorer.state`, and the modules they use; the page's
text, CSS and script are in `explorer.page`).

    genreid explore [--checkpoint DIR] [--data DIR] [--host H] [--port P]
    python explorer/app.py [same options]          # also how a Hugging Face Space starts it

Every panel is a named API endpoint, callable with no arguments through gradio_client:
generate, sweep, directions, neighbors, projection, retrieve, decompose (and swap,
interpolate).

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    grid, info, files = client.predict(api_name="/generate")               # the default view
    grid, info, files = client.predict(["pid 2", "prior 0"], 0, 4, 7, api_name="/generate")
    strip, vector, info, files = client.predict(handle_file("person.jpg"), api_name="/decompose")
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`python explorer/app.py`): the repo root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradio as gr  # noqa: E402

from core.config import DEFAULT_CHECKPOINT  # noqa: E402
from explorer import handlers as h  # noqa: E402
from explorer.handlers import bind  # noqa: E402
from explorer.page import BRIDGE_HTML, BRIDGE_JS, CSS, HELP, INTRO, TITLE  # noqa: E402
from explorer.pictures import UPLOAD_LIMITS, UPLOAD_MAX_BYTES  # noqa: E402
from explorer.state import ExplorerState, load_state  # noqa: E402


def _status(state: ExplorerState) -> str:
    parts = " · ".join(f"{p} {'✓' if state.has(p) else '✗ (not trained yet)'}"
                       for p in ("generator", "prior", "img2id", "img2noise"))
    if state.real_data:
        data = (f"data `{state.data}` (real query and gallery"
                + ("; real portraits)" if state.real_portraits else
                   "; its training persons are not the model's, so portraits are generated)"))
    else:
        data = ("no dataset: query and gallery are **generated** from prior samples, portraits are "
                "generated (start with `--data DIR` for real pictures)")
    return (f"Model set `{state.folder}`: {len(state.train_keys)} training identities, "
            f"{state.dim}-d identity space, {state.size[0]}×{state.size[1]} pictures; "
            f"networks: {parts}. {data}.")


def _warning(state: ExplorerState, *parts: str) -> None:
    message = state.missing(*parts)
    if message:
        gr.Markdown(f"⚠️ **{message}**")


def _identity_dropdown(state: ExplorerState, label: str, value: str, **kw) -> gr.Dropdown:
    return gr.Dropdown(choices=state.identity_keys, value=value, label=label, allow_custom_value=True,
                       filterable=True, **kw)


def _image(label: str, **kw) -> gr.Image:
    return gr.Image(label=label, format="png", type="numpy", interactive=False,
                    elem_classes=["pixelated"], **kw)


def _upload(label: str) -> gr.File:
    return gr.File(label=f"{label} ({UPLOAD_LIMITS})", file_types=["image"], type="filepath")


def _files(label: str = "Downloads") -> gr.File:
    return gr.File(label=label, file_count="multiple", interactive=False)


def _preview_box(state: ExplorerState) -> gr.Checkbox:
    return gr.Checkbox(value=True, label="Fast preview",
                       info=f"{state.model.preview_description()}; untick for full quality")


def build_app(state: ExplorerState) -> gr.Blocks:
    """The gr.Blocks layout and its events (every public event with an explicit api_name)."""
    model_work = dict(concurrency_id="model", concurrency_limit=1)
    first, second = h.default_identity(state), h.default_second_identity(state)
    n_query = "the query set" if state.real_data else "the generated query set"

    with gr.Blocks(title=TITLE, delete_cache=(1800, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        gr.Markdown(_status(state), elem_id="status")

        with gr.Tabs():
            # ------------------------------------------------------------ 1. generation
            with gr.Tab("1 · Generation"):
                gr.Markdown(HELP["generate"])
                with gr.Row():
                    gen_ids = gr.Dropdown(choices=state.identity_keys, value=h.default_identities(state),
                                          multiselect=True, allow_custom_value=True, filterable=True,
                                          label="Identities (rows)", scale=3)
                    gen_new = gr.Slider(0, h.MAX_NEW, value=h.default_new_identities(state), step=1,
                                        label="New identities from the prior",
                                        interactive=state.has("prior"),
                                        info=None if state.has("prior") else "no prior network yet")
                with gr.Row():
                    gen_noises = gr.Slider(1, h.MAX_NOISES, value=h.DEFAULT_NOISES, step=1,
                                           label="Noises (columns)")
                    gen_seed = gr.Number(value=0, precision=0, minimum=0, label="Noise seed")
                    gen_prior_seed = gr.Number(value=0, precision=0, minimum=0, label="Prior seed")
                with gr.Row():
                    gen_preview = _preview_box(state)
                    gen_btn = gr.Button("Generate", variant="primary")
                    gen_new_btn = gr.Button("New noises")
                gen_img = _image("Identities × noises")
                gen_info = gr.Markdown()
                gen_files = _files()

            # ------------------------------------------------------------ 2. sweep
            with gr.Tab("2 · Sweep"):
                gr.Markdown(HELP["sweep"])
                with gr.Row():
                    sw_id = _identity_dropdown(state, "Identity", first, scale=2)
                    sw_coords = gr.Dropdown(choices=[(f"z{i}", i) for i in range(state.dim)],
                                            value=[c for c in h.SWEEP_COORDINATES if c < state.dim],
                                            multiselect=True, label="Coordinates (rows)", scale=3)
                with gr.Row():
                    sw_units = gr.Radio([h.SWEEP_SD, h.SWEEP_ABSOLUTE], value=h.SWEEP_SD,
                                        label="Range in", scale=2)
                    sw_low = gr.Number(value=-3.0, label="From")
                    sw_high = gr.Number(value=3.0, label="To")
                    sw_steps = gr.Slider(2, h.MAX_STEPS, value=7, step=1, label="Steps")
                    sw_seed = gr.Number(value=0, precision=0, minimum=0, label="Noise seed")
                with gr.Row():
                    sw_relative = gr.Checkbox(value=False, label="Around the identity's own value "
                                                                "(instead of the mean, or of 0 in "
                                                                "absolute values)")
                    sw_rank_all = gr.Checkbox(value=False, label=f"Rank every coordinate "
                                                                 f"({2 * state.dim} more pictures)")
                    sw_preview = _preview_box(state)
                sw_btn = gr.Button("Sweep", variant="primary")
                sw_img = _image("Sweep")
                sw_info = gr.Markdown()
                sw_table = gr.Dataframe(label="Coordinates ranked by how much they change the picture",
                                        interactive=False)
                sw_files = _files()

            # ------------------------------------------------------------ 3. directions
            with gr.Tab("3 · Directions"):
                gr.Markdown(HELP["directions"])
                with gr.Row():
                    dr_id = _identity_dropdown(state, "Identity", first, scale=2)
                    count = state.space.num_directions
                    dr_dirs = gr.Dropdown(choices=[(f"PC{k}", k) for k in range(1, count + 1)],
                                          value=[d for d in h.DIRECTIONS if d <= count],
                                          multiselect=True, label="Principal directions (rows)", scale=3)
                with gr.Row():
                    dr_low = gr.Number(value=-3.0, label="From (standard deviations)")
                    dr_high = gr.Number(value=3.0, label="To (standard deviations)")
                    dr_steps = gr.Slider(2, h.MAX_STEPS, value=5, step=1, label="Steps")
                    dr_seed = gr.Number(value=0, precision=0, minimum=0, label="Noise seed")
                    dr_preview = _preview_box(state)
                dr_btn = gr.Button("Walk", variant="primary")
                dr_img = _image("Along the principal directions")
                dr_info = gr.Markdown()
                dr_table = gr.Dataframe(value=h.directions_table(state), interactive=False,
                                        label="Principal directions of the training identities")
                dr_files = _files()

            # ------------------------------------------------------------ 4. neighbours
            with gr.Tab("4 · Neighbours"):
                gr.Markdown(HELP["neighbors"])
                with gr.Row():
                    nb_id = _identity_dropdown(state, "Identity", first, scale=3)
                    nb_k = gr.Slider(1, 20, value=h.DEFAULT_K_NEIGHBOURS, step=1, label="k nearest")
                nb_btn = gr.Button("Find neighbours", variant="primary")
                nb_img = _image("The identity (blue) and its nearest identities")
                nb_table = gr.Dataframe(label="Nearest identities", interactive=False)
                nb_stats = gr.Markdown()
                with gr.Row():
                    nb_pairs = _image("Closest and farthest pairs")
                    nb_hist = gr.Plot(label="Pairwise distances")
                nb_files = _files()

            # ------------------------------------------------------------ 5. projection
            with gr.Tab("5 · Projection"):
                gr.Markdown(HELP["projection"])
                with gr.Row():
                    pr_method = gr.Radio(["PCA", "UMAP"], value="PCA", label="Method")
                    pr_colour = gr.Dropdown(choices=state.colour_choices(), value="source",
                                            label="Colour by (source, camera, or an attribute of "
                                                  "the identity vector)")
                    pr_btn = gr.Button("Show", variant="primary")
                with gr.Row():
                    with gr.Column(scale=3):
                        pr_plot = gr.Plot(label="Identity space (hover: thumbnail; click: select)",
                                          elem_id="projection-plot")
                        pr_bridge = gr.HTML(html_template=BRIDGE_HTML, js_on_load=BRIDGE_JS,
                                            elem_id="projection-bridge")
                    with gr.Column(scale=2):
                        pr_selected = _identity_dropdown(state, "Selected identity (type or pick)",
                                                         first)
                        pr_portrait = _image("Selected identity", height=260)
                        pr_sel_info = gr.Markdown()
                        pr_map = gr.Image(label="Click map: click a point to select it",
                                          format="png", type="numpy", interactive=False,
                                          elem_classes=["static-label"])
                        gr.Markdown("Discs: training identities · squares: prior samples · "
                                    "crosses: gallery pictures.")
                pr_info = gr.Markdown()
                pr_files = _files()

            # ------------------------------------------------------------ 6. retrieval
            with gr.Tab("6 · Retrieval"):
                gr.Markdown(HELP["retrieve"])
                _warning(state, "img2id")
                with gr.Row():
                    rt_query = gr.Number(value=0, precision=0, minimum=0,
                                         label=f"Query: index into {n_query}")
                    rt_upload = _upload("…or upload a query picture")
                    rt_k = gr.Slider(1, h.MAX_K, value=h.DEFAULT_K_RETRIEVAL, step=1, label="Top k")
                rt_btn = gr.Button("Retrieve", variant="primary")
                rt_img = _image("Query (blue) and its top matches: green right person, red wrong")
                rt_info = gr.Markdown()
                rt_table = gr.Dataframe(label="Top matches", interactive=False)
                rt_files = _files()

            # ------------------------------------------------------------ 7. decomposition
            with gr.Tab("7 · Decomposition"):
                gr.Markdown(HELP["decompose"])
                _warning(state, "img2id", "img2noise")
                with gr.Row():
                    dc_picture = gr.Number(value=0, precision=0, minimum=0,
                                           label=f"Picture: index into {n_query}")
                    dc_upload = _upload("…or upload a picture")
                dc_btn = gr.Button("Decompose", variant="primary")
                dc_img = _image("Input · noise · regenerated · error")
                dc_info = gr.Markdown()
                dc_vector = gr.Plot(label="Identity vector")
                dc_files = _files()
                with gr.Accordion("Swap (beyond the paper): A's pose and background, B's person",
                                  open=False):
                    with gr.Row():
                        sp_a = gr.Number(value=0, precision=0, minimum=0, label="Picture A: index")
                        sp_a_up = _upload("…or upload A")
                        sp_b = gr.Number(value=1, precision=0, minimum=0, label="Picture B: index")
                        sp_b_up = _upload("…or upload B")
                    sp_btn = gr.Button("Swap", variant="primary")
                    sp_img = _image("A · B · GEN(noise A, identity B) · GEN(noise B, identity A)")
                    sp_info = gr.Markdown()
                    sp_files = _files()
                with gr.Accordion("Interpolation (beyond the paper): from one identity to another",
                                  open=False):
                    with gr.Row():
                        ip_a = _identity_dropdown(state, "From", first)
                        ip_b = _identity_dropdown(state, "To", second)
                        ip_steps = gr.Slider(2, 16, value=8, step=1, label="Steps")
                        ip_seed = gr.Number(value=0, precision=0, minimum=0, label="Noise seed")
                        ip_preview = _preview_box(state)
                    ip_btn = gr.Button("Interpolate", variant="primary")
                    ip_img = _image("Interpolation")
                    ip_info = gr.Markdown()
                    ip_files = _files()

        # ---------------------------------------------------------------- events
        gen_inputs = [gen_ids, gen_new, gen_noises, gen_seed, gen_prior_seed, gen_preview]
        gen_outputs = [gen_img, gen_info, gen_files]
        gen_btn.click(bind(h.generate, state), gen_inputs, gen_outputs, api_name="generate",
                      **model_work)
        gen_new_btn.click(h.new_noise_seed, None, gen_seed, api_name="new_noises").then(
            bind(h.generate, state), gen_inputs, gen_outputs, api_name="generate_new_noises",
            api_visibility="undocumented", **model_work)
        sw_btn.click(bind(h.sweep, state),
                     [sw_id, sw_coords, sw_low, sw_high, sw_steps, sw_seed, sw_relative, sw_rank_all,
                      sw_preview, sw_units],
                     [sw_img, sw_table, sw_info, sw_files], api_name="sweep", **model_work)
        sw_units.change(h.sweep_range_defaults, sw_units, [sw_low, sw_high], api_name="sweep_units",
                        api_visibility="private")
        dr_btn.click(bind(h.directions, state),
                     [dr_id, dr_dirs, dr_low, dr_high, dr_steps, dr_seed, dr_preview],
                     [dr_img, dr_table, dr_info, dr_files], api_name="directions", **model_work)
        nb_btn.click(bind(h.neighbors, state), [nb_id, nb_k],
                     [nb_img, nb_table, nb_pairs, nb_stats, nb_hist, nb_files], api_name="neighbors",
                     **model_work)

        pr_inputs = [pr_method, pr_colour, pr_selected]
        pr_outputs = [pr_plot, pr_map, pr_info, pr_files]
        projection = bind(h.projection, state)
        pr_btn.click(projection, pr_inputs, pr_outputs, api_name="projection",
                     concurrency_id="projection", concurrency_limit=1)
        for trigger in (pr_method.change, pr_colour.change):
            trigger(projection, pr_inputs, pr_outputs, api_name="projection_refresh",
                    api_visibility="private", concurrency_id="projection", concurrency_limit=1)
        demo.load(projection, pr_inputs, pr_outputs, api_name="projection_on_load",
                  api_visibility="private", concurrency_id="projection", concurrency_limit=1)
        demo.load(bind(h.selected_portrait, state), pr_selected, [pr_portrait, pr_sel_info],
                  api_name="selected_on_load", api_visibility="private", **model_work)
        pr_map.select(bind(h.select_on_map, state), [pr_method, pr_colour], pr_selected,
                      api_name="select_on_map", api_visibility="private")
        pr_bridge.click(h.select_from_plot, None, pr_selected, api_name="select_from_plot",
                        api_visibility="private")
        pr_selected.change(bind(h.select_identity, state), [pr_selected, gen_ids, pr_method, pr_colour],
                           [pr_portrait, pr_sel_info, pr_map, sw_id, dr_id, nb_id, ip_a, gen_ids],
                           api_name="select_identity", **model_work)

        rt_btn.click(bind(h.retrieve, state), [rt_upload, rt_query, rt_k],
                     [rt_img, rt_table, rt_info, rt_files], api_name="retrieve", **model_work)
        dc_btn.click(bind(h.decompose, state), [dc_upload, dc_picture],
                     [dc_img, dc_vector, dc_info, dc_files], api_name="decompose", **model_work)
        sp_btn.click(bind(h.swap, state), [sp_a_up, sp_b_up, sp_a, sp_b], [sp_img, sp_info, sp_files],
                     api_name="swap", **model_work)
        ip_btn.click(bind(h.interpolate, state), [ip_a, ip_b, ip_steps, ip_seed, ip_preview],
                     [ip_img, ip_info, ip_files], api_name="interpolate", **model_work)
    return demo


def main(checkpoint: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
         host: str | None = None, port: int | None = None, device: str = "auto", *,
         prevent_thread_lock: bool = False, quiet: bool = False, **state_options) -> gr.Blocks:
    """Load the model set, build the state and the app, and launch it (blocking unless
    prevent_thread_lock). host/port default to $GRADIO_SERVER_NAME/$GRADIO_SERVER_PORT, else
    127.0.0.1:7860 (loopback only)."""
    start = time.perf_counter()
    state = load_state(checkpoint or DEFAULT_CHECKPOINT, data, device, **state_options)
    demo = build_app(state)
    demo.queue(max_size=32, default_concurrency_limit=1)
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = int(port or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    if not quiet:
        print(f"genreid explorer: model set {state.folder} ready in {time.perf_counter() - start:.1f} s; "
              f"starting on http://{host}:{port}", flush=True)
    demo.explorer_state = state  # for tests and notebooks
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=prevent_thread_lock,
                max_file_size=UPLOAD_MAX_BYTES, css=CSS, theme=gr.themes.Soft(), quiet=quiet)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="explorer/app.py", description="The genreid explorer (Gradio).")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="model-set folder")
    p.add_argument("--data", default=None, help="dataset root in the Market-1501 layout (optional)")
    p.add_argument("--host", default=None, help="default $GRADIO_SERVER_NAME or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default $GRADIO_SERVER_PORT or 7860")
    p.add_argument("--device", default="auto")
    p.add_argument("--gallery", default="auto",
                   help="saved gallery index (genreid index) to search instead of encoding the "
                        "gallery; default: <checkpoint>/gallery when there")
    return p.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from core.checkpoint import CheckpointError
    from core.data import DataError

    try:
        main(checkpoint=args.checkpoint, data=args.data, host=args.host, port=args.port,
             device=args.device, gallery=args.gallery)
    except (CheckpointError, DataError, ValueError) as e:
        print(f"explorer: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
