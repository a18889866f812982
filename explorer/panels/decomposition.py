"""6. Decomposition: a picture split into identity and noise and regenerated; two pictures'
identities swapped; a straight path between two identities."""
from __future__ import annotations

import gradio as gr
import numpy as np

from core.api import GenReID

from .. import figures, render
from ..state import ExplorerState
from .common import (
    as_int,
    bundle,
    default_identity,
    default_second_identity,
    network_note,
    panel,
    progress_report,
    real_note,
    save_csv,
    save_reals,
    vector_rows,
)


@panel
def decompose(state: ExplorerState, upload: str | None = None, picture: int = 0,
              progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """A picture (uploaded, else the query set's picture at index picture) split into identity
    (Img2ID) and noise (Img2Noise), regenerated from the two.
    Returns (picture, identity figure, description, files)."""
    state.require("generator", "img2id", "img2noise")
    report = progress_report(progress)
    image, _, _, caption, name = state.picture(as_int(picture, "picture index", 0, 10**9), upload,
                                               report)
    report(0.5, "decomposing")
    parts = state.compute(state.model.decompose, image[None])
    noise_picture = GenReID.noise_picture(parts.noise)[0]
    recon, error = parts.reconstruction[0], float(parts.error[0])
    strip = render.strip([parts.image[0], noise_picture, recon,
                          render.error_map(parts.image[0], recon)],
                         [f"input\n{caption}", "noise\n(clipped ±2.5)", "regenerated\nGEN(noise, id)",
                          f"|error| x 4\nMAE {error:.3f}"], [render.EDGE] * 4)
    vector = parts.identity[0]
    rows, dists = state.nearest_training(vector, 5)
    near = ", ".join(f"{state.train_keys[r]} ({d:.3f})" for r, d in zip(rows, dists, strict=True))
    z = parts.noise[0]
    info = (f"**{name}**: reconstruction error {error:.4f} (mean absolute, pixels in [0, 1]). "
            f"Identity |v| = {np.linalg.norm(vector):.3f}; nearest training identities: {near}. "
            f"Noise: mean {z.mean():+.3f}, std {z.std():.3f}, "
            f"{(np.abs(z) > 2.5).mean():.1%} of values clipped for display.")
    out = state.output_dir("decompose")
    files = [render.save_png(strip, out / "decomposition.png"),
             render.save_png(noise_picture, out / "noise.png"),
             render.save_png(recon, out / "regenerated.png"),
             save_csv(out / "identity.csv", [f"z{i}" for i in range(state.dim)],
                       [[f"{x:.6g}" for x in vector]]),
             str(out / "identity.npy"), str(out / "noise.npy")]
    np.save(out / "identity.npy", vector)
    np.save(out / "noise.npy", z)
    figure = figures.vector_figure(vector, "identity vector (Img2ID)")
    return strip, figure, info, bundle(files, "decomposition")


@panel
def swap(state: ExplorerState, upload_a: str | None = None, upload_b: str | None = None,
         picture_a: int = 0, picture_b: int = 1, progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """A's noise with B's identity (A's pose and background, B's person), and the reverse.
    Returns (picture, description, files)."""
    state.require("generator", "img2id", "img2noise")
    report = progress_report(progress)
    a = state.picture(as_int(picture_a, "picture A", 0, 10**9), upload_a, report)
    b = state.picture(as_int(picture_b, "picture B", 0, 10**9), upload_b, report)
    report(0.3, "decomposing A and B")
    parts = state.compute(state.model.decompose, np.stack([a[0], b[0]]))
    swapped = state.generate(parts.identity[[1, 0]], parts.noise[[0, 1]],
                             lambda f, d: report(0.6 + 0.4 * f, d), "swapping")
    picture = render.strip([parts.image[0], parts.image[1], swapped[0], swapped[1]],
                           [f"A\n{a[3]}", f"B\n{b[3]}", "A's pose,\nB's person",
                            "B's pose,\nA's person"],
                           [None, None, render.BLUE, render.BLUE])
    out = state.output_dir("swap")
    files = [render.save_png(picture, out / "swap.png"),
             render.save_png(swapped[0], out / "a_pose_b_person.png"),
             render.save_png(swapped[1], out / "b_pose_a_person.png")]
    info = (f"GEN(noise of A, identity of B) keeps A's pose, background and light and puts B's "
            f"person in; the last picture is the reverse. A: {a[4]}; B: {b[4]}.")
    return picture, info, bundle(files, "swap")


@panel
def interpolate(state: ExplorerState, identity_a: str | None = None, identity_b: str | None = None,
                steps: int = 8, noise_seed: int = 0, preview: bool = True,
                progress=gr.Progress()):  # noqa: B008 (Gradio's pattern)
    """A straight path from identity A to identity B with one fixed noise.
    Returns (picture, description, files)."""
    state.require("generator")
    ka, va = state.resolve(default_identity(state) if identity_a is None else identity_a)
    kb, vb = state.resolve(default_second_identity(state) if identity_b is None else identity_b)
    steps = as_int(steps, "steps", 2, 16)
    noise_seed = as_int(noise_seed, "noise seed", 0, 2**31 - 1)
    t = np.linspace(0.0, 1.0, steps)
    vectors = ((1 - t)[:, None] * va[None] + t[:, None] * vb[None]).astype(np.float32)
    images = state.generate(vectors, np.repeat(state.noise(1, noise_seed), steps, 0),
                            progress_report(progress), "interpolation", preview)
    captions = [f"t = {x:.2f}" for x in t]
    captions[0], captions[-1] = f"{ka}\nt = 0", f"{kb}\nt = 1"
    pictures, frames = list(images), [None] * steps
    # Training persons' real pictures at the ends of the path, framed as real.
    ra, rb = state.real_picture(ka), state.real_picture(kb)
    if ra is not None:
        pictures, captions, frames = [ra, *pictures], [f"{ka}\nreal", *captions], [render.REAL, *frames]
    if rb is not None:
        pictures, captions, frames = [*pictures, rb], [*captions, f"{kb}\nreal"], [*frames, render.REAL]
    picture = render.strip(pictures, captions, frames)
    out = state.output_dir("interpolate")
    found = [(k, r) for k, r in ((ka, ra), (kb, rb)) if r is not None]
    files = [render.save_png(picture, out / "interpolation.png"), str(out / "vectors.npy"),
             save_csv(out / "vectors.csv", ["t"] + [f"z{i}" for i in range(state.dim)],
                       vector_rows([f"{x:.4f}" for x in t], vectors)), *save_reals(out, found)]
    np.save(out / "vectors.npy", vectors)
    info = (f"(1 − t) · {ka} + t · {kb}, {steps} steps, noise seed {noise_seed}; "
            f"distance {np.linalg.norm(va - vb):.3f}. " + (real_note(state) if found else "")
            + network_note(state, preview))
    return picture, info, bundle(files, "interpolation")
