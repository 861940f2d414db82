/** `npm run size`: prints the sizes of what the packed SDK holds and fails when a Tether bundle is over its budget. */
import { BUDGETS, checkBudgets, measureSizes } from './sizes.js';

const { rows, packed } = await measureSizes();
console.log(`${packed.filename}: ${packed.files} files, ${packed.tarballBytes} B packed, ${packed.unpackedBytes} B unpacked`);
console.table(rows.map((r) => ({ ...r, budget: BUDGETS[r.name] ?? '' })));
const over = checkBudgets(rows);
if (over.length > 0) {
  console.error(over.join('\n'));
  process.exit(1);
}
