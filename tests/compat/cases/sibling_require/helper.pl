sub helper_format { return "formatted($_[0])" }
1;
