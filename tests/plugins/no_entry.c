/* no_entry.c -- a shared object without the plugin entry: not a plugin. */
int no_entry_answer(void);

int no_entry_answer(void)
{
    return 42;
}
