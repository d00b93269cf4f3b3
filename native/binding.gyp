# Builds native/build/Release/ec_isal.node and fs_seek.node at `npm install` / `npm ci` (root
# package.json "install" script). Needs Debian libisal-dev and Node headers
# (npm_config_nodedir=/usr). See README.md.
{
  "targets": [
    {
      "target_name": "ec_isal",
      "sources": ["ec_isal.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "libraries": ["-ldl"]
    },
    {
      "target_name": "fs_seek",
      "sources": ["fs_seek.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
