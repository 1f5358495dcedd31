"""One key table per source: ``(source key template, JAX path template, transform)`` rows, read by
``fusionjax.convert.mapping``. A table is data; the algorithm that applies it is shared."""
