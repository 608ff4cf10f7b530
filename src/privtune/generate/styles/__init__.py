"""Generation styles, one module each naming a `privtune.generate.style.Style` in `STYLE`: adding a file here
adds a value of generate's `style` setting."""
