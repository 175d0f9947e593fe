"""fit-single: fit a coordinate MLP to the pixels of one image, and render it at any size.

No dataset: `fitting.fit` trains f(x, y) -> colour (`network.CoordMLP`) on one image's pixels,
`network.render` evaluates it on any grid over the same rectangle, in chunks of rows so an
8192 px output needs only a few chunks of memory.

The package, by concern:
  network.py      the network (CoordMLP: encodings, palette head, pixel-centre coordinates) and
                  rendering it on any grid; the "coord-mlp" architecture (models/coord_mlp.py)
                  wraps this and fitting.py, which is why the network lives here, below both
  fitting.py      the fitting loop: FitConfig, the point term, the palette, Adam with a cosine
                  decay, the live and final PSNR
  consistency.py  the consistency term: the output, downscaled with the Pillow-exact kernel, must
                  give back the input
  sizes.py        what a run works at: the input's size limit, the output size asked for
  saved.py        a fitted network as a safetensors file, and back
"""
