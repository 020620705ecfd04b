"""The tracer of ``needle.compile``: a recording backend (:mod:`.recorder`) that turns a
step's backend calls into IR, strided views into movement ops (:mod:`.views`), the fused
ops it keeps as composites (:mod:`.fused`), optimizer numbers as runtime scalars
(:mod:`.scalars`), what a step can reach (:mod:`.discovery`) and one traced call as a
bound program (:mod:`.program`)."""
