"""What-if replay: recorded tasks run again through the real admission, queue and scheduling
code on a virtual clock, under one or more policies (specs/fleet.md FLT-050..FLT-055)."""
