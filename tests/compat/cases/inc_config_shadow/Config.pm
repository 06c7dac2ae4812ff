# A team's own Config.pm beside the script: perl's core Config must win for `use Config`.
package Config;
our %Config = (osname => 'team-config', team_setting => 'yes');
sub import { no strict 'refs'; *{caller() . '::Config'} = \%Config }
1;
