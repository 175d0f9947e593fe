"""Animated GIF, PNG (APNG) and WebP: every frame read as a viewer shows it, and written back frame
by frame (frames.py's FrameSource and FrameSink).

Where things are:
- source.py: `open_animation` (the limits checked, every frame decoded once at open),
  `AnimationSource` (frames.FrameSource) and `AnimationSink` (frames.FrameSink).
- gif.py, apng.py, webp.py: each format's reader (its structure walked, its frames composited) and
  its encoder (frames encoded as they arrive); gif.py also `encode_gif` for still GIFs (write.py).
- common.py: what the formats share: `FrameTiming`, the corrupt-structure error, the frame pixels an
  encoder is given, the output's canvas size and the duration clock.

Compositing follows what browsers show (the rules of each format are in its module). The canvas
starts transparent.

Pillow's own GIF and APNG readers are not used for compositing: measured against canvases built by
hand (tests/test_animation.py), Pillow carries a GIF frame's disposal over to later frames that set
none, fills a GIF's cleared areas and uncovered canvas with the background colour (or index 0) instead
of transparency, blends APNG "over" frames by pasting with their alpha as the mask (right only where
alpha is 0 or 255), clears APNG frames to opaque black in RGB files, and shows the default image as
frame 0. So the frames' own data is decoded by Pillow (each as a small file of its own, or libwebp's
canvas) and composited here.

Writing: each converted frame is encoded as it arrives, never held at full size; the file appears
atomically at finish (source.py says what is kept).
"""
from upscale_cli.images.animation.common import FrameTiming
from upscale_cli.images.animation.gif import encode_gif
from upscale_cli.images.animation.source import AnimationSink, AnimationSource, open_animation, reader_format

__all__ = ["AnimationSink", "AnimationSource", "FrameTiming", "encode_gif", "open_animation", "reader_format"]
