"""`python -m synthetic`: write a synthetic image database (or sample PNGs) to a folder."""

from synthetic.xrays import main

raise SystemExit(main())
