"""Images: decoding (``decode``), image folders in Ray Data (``folders``), and captioned
canvases composed from real handwritten digits (``digit_canvas``)."""
