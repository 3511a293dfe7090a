// vfsd-bench: a native vhost-user-fs front-end for `npm run bench`, and a null back-end that
// shows the front-end's own ceiling. See docs/performance.md.
//
//   vfsd-bench frontend --socket PATH [--pid DAEMON_PID] [--file NAME] [--wfile NAME] [--dir NAME]
//       connects, starts the device, sends FUSE_INIT, LOOKUPs (and OPENs) the names in the
//       share's root, prints {"ready":true,...}, then runs the commands on stdin (frontend.cc).
//   vfsd-bench null --socket PATH [--dir-entries N]
//       listens on PATH and answers one front-end with canned replies (null_backend.cc).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int frontend_main(const char* socket_path, int daemon_pid, const char* file, const char* wfile, const char* dir);
int null_backend_main(const char* socket_path, unsigned dir_entries);

static int usage() {
  fprintf(stderr,
          "usage: vfsd-bench frontend --socket PATH [--pid PID] [--file NAME] [--wfile NAME] [--dir NAME]\n"
          "       vfsd-bench null --socket PATH [--dir-entries N]\n");
  return 2;
}

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string mode = argv[1];
  const char *sock = nullptr, *file = nullptr, *wfile = nullptr, *dir = nullptr;
  int pid = 0;
  unsigned entries = 10000;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--socket") sock = v;
    else if (k == "--pid") pid = atoi(v);
    else if (k == "--file") file = v;
    else if (k == "--wfile") wfile = v;
    else if (k == "--dir") dir = v;
    else if (k == "--dir-entries") entries = unsigned(strtoul(v, nullptr, 10));
    else return usage();
  }
  if (!sock || (argc % 2) != 0) return usage();
  if (mode == "frontend") return frontend_main(sock, pid, file, wfile, dir);
  if (mode == "null") return null_backend_main(sock, entries);
  return usage();
}
