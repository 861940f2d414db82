/** `npm run size`: prints the bundle sizes and fails when a Tether bundle is over its budget. */
import { BUDGETS, checkBudgets, measureSizes } from './sizes.js';

const rows = await measureSizes();
console.table(rows.map((r) => ({ ...r, budget: BUDGETS[r.name] ?? '' })));
const over = checkBudgets(rows);
if (over.length > 0) {
  console.error(over.join('\n'));
  process.exit(1);
}
