import { BlockError } from '../errors.js';
import type { BlockDriver } from './driver.js';

/** Drivers by name. Each BlockLayer has one, seeded with the built-in drivers; users add their own. */
export class DriverRegistry {
  private readonly drivers = new Map<string, BlockDriver>();

  /** Adds a driver; a name can be taken only once. */
  register(driver: BlockDriver): void {
    if (this.drivers.has(driver.name)) {
      throw new BlockError('EINVAL', `driver '${driver.name}' is already registered`, { field: 'driver' });
    }
    this.drivers.set(driver.name, driver);
  }

  /** The driver with that name, or an EINVAL naming the field and the known drivers. */
  get(name: string, field = 'driver'): BlockDriver {
    const driver = this.drivers.get(name);
    if (!driver) {
      throw new BlockError('EINVAL', `${field}: unknown driver '${name}' (known: ${[...this.drivers.keys()].join(', ')})`, {
        field,
      });
    }
    return driver;
  }

  /** True if a driver of this name is registered. */
  has(name: string): boolean {
    return this.drivers.has(name);
  }

  /** All registered drivers, in the order they were added. */
  list(): IterableIterator<BlockDriver> {
    return this.drivers.values();
  }

  /** Names of all registered drivers. */
  names(): string[] {
    return [...this.drivers.keys()];
  }
}
