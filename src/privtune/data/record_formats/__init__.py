"""Record formats, one module each naming a `privtune.data.formats.Format` in `FORMAT`: adding a file
here adds a format to detection, `--format` and the prep config."""
