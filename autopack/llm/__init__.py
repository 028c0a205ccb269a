"""Everything that talks to Claude: client factory and cost ledger, cassette replay, builder.

The only package that imports ``anthropic`` / ``httpx2``, and only inside functions,
so importing it costs nothing until a call is made.
"""
