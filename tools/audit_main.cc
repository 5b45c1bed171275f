// tally-audit: see tools/audit.h and docs/audit.md.
#include <signal.h>

#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include "tools/audit.h"

int main(int argc, char** argv) {
  // A closed pipe (`tally-audit export | head`) fails the write instead of killing the process,
  // so the secondary store's temporary directory is still removed.
  signal(SIGPIPE, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  std::ios::sync_with_stdio(false);
  int code = tally::kExitCannotRun;
  try {
    code = tally::RunAudit(args, std::cout, std::cerr);
  } catch (const std::bad_alloc&) {  // verify turns its own into an error; this is the rest
    std::cerr << "tally-audit: out of memory\n";
  } catch (const std::exception& e) {
    std::cerr << "tally-audit: " << e.what() << "\n";
  }
  std::cout.flush();
  return std::cout ? code : tally::kExitCannotRun;
}
