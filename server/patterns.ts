/**
 * `billing.*`, `room:*`: `*` matches any run of characters (`:` and `.` included), everything
 * else is literal. Matched without regular expressions, in O(pattern × name) at worst, so that
 * a pattern with many stars cannot make matching backtrack exponentially.
 */
export function globMatcher(pattern: string): (name: string) => boolean {
  return (name) => {
    let p = 0;
    let n = 0;
    let star = -1;
    let resume = 0;
    while (n < name.length) {
      if (p < pattern.length && pattern[p] === '*') {
        star = p++;
        resume = n;
      } else if (p < pattern.length && pattern[p] === name[n]) {
        p++;
        n++;
      } else if (star >= 0) {
        p = star + 1;
        n = ++resume;
      } else {
        return false;
      }
    }
    while (p < pattern.length && pattern[p] === '*') p++;
    return p === pattern.length;
  };
}
