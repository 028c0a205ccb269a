"""Everything that talks to Claude: clients and the per-request ledger, cassette record/replay,
budgets, the builder and the doctor.

The only package that imports ``anthropic`` / ``httpx2``, and only inside functions (or in
modules imported from inside functions), so importing it costs nothing until a call is made.
"""
