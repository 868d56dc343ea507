"""GPIO backends behind one interface, and the pin manager that drives them."""
