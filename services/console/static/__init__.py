"""The console's static scripts, served at /console/static (a package, so the wheel ships its *.js)."""
