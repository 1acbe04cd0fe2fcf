// What kind of file system object a path is, in words, for messages about paths
// that are not the regular file or directory a command expected ("/dev/null is a
// character device"). Shared by the front end and the runtime's Node platform.
import type { Stats } from 'node:fs';

export function fileKind(st: Stats): string {
  if (st.isFile()) return 'a file';
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}
