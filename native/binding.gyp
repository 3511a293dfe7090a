{
  "targets": [
    {
      "target_name": "virtiofs_native",
      "sources": [
        "src/addon.cc",
        "src/sock.cc",
        "src/poll.cc",
        "src/mem.cc",
        "src/path.cc",
        "src/fd.cc",
        "src/xattr.cc",
        "src/misc.cc",
        "src/sandbox.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags": ["-Wall", "-Wextra"],
      "cflags_cc": ["-std=gnu++20", "-Wall", "-Wextra"],
      "cflags_cc!": ["-std=gnu++17"]
    },
    {
      "target_name": "vfsd-sandbox",
      "type": "executable",
      "sources": ["sandbox/vfsd-sandbox.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-O2"]
    },
    {
      "target_name": "vfsd-bench",
      "type": "executable",
      "sources": ["bench/main.cc", "bench/vu.cc", "bench/frontend.cc", "bench/null_backend.cc"],
      "cflags_cc": ["-std=gnu++20", "-O2", "-Wall", "-Wextra"],
      "cflags_cc!": ["-std=gnu++17", "-fno-exceptions"]
    }
  ]
}
