from hatchway.tunnel.cli import main
main()
