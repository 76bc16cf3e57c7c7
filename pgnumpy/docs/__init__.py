"""The reading site: derivations beside the code that computes them.

`python -m pgnumpy.docs --out DIR` renders derivations/*.md, docs/*.md, README.md and every
module's source into static HTML: math as MathML at build time, code highlighted by Pygments,
every equation label an anchor and every mention of one a link, every `path::name` a link to that
function. Nothing is fetched when a page is viewed. See pgnumpy/docs/build.py.
"""
